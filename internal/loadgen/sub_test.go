package loadgen

import (
	"bytes"
	"testing"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/google/go-cmp/cmp"
)

func TestSeqAccounting(t *testing.T) {
	type counts struct{ Lost, Duplicates, Reordered uint64 }
	evens := make([]uint64, 0, maxHoles+3)
	for i := range maxHoles + 2 {
		evens = append(evens, 2*uint64(i))
	}
	tests := []struct {
		name string
		seqs []uint64
		sent uint64
		want counts
	}{
		{"in order", []uint64{0, 1, 2, 3}, 4, counts{}},
		{"nothing received", nil, 3, counts{Lost: 3}},
		{"gap", []uint64{0, 1, 3}, 4, counts{Lost: 1}},
		{"tail lost", []uint64{0, 1}, 5, counts{Lost: 3}},
		{"reordered", []uint64{0, 2, 1, 3}, 4, counts{Reordered: 1}},
		{"duplicate", []uint64{0, 1, 1, 2}, 3, counts{Duplicates: 1}},
		{"late then duplicate", []uint64{0, 2, 1, 1}, 3, counts{Duplicates: 1, Reordered: 1}},
		{"hole filled from the middle", []uint64{0, 5, 2, 3, 1, 4}, 6, counts{Reordered: 4}},
		{"hole partly filled", []uint64{0, 9, 4, 5}, 10, counts{Lost: 6, Reordered: 2}},
		// One hole more than maxHoles: the oldest, {1}, is forgotten, so
		// a late 1 counts as a duplicate and stays lost.
		{"too many holes", append(evens, 1), 2*maxHoles + 3, counts{Lost: maxHoles + 1, Duplicates: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s sequence
			var got counts
			for _, seq := range tt.seqs {
				switch s.observe(seq) {
				case duplicate:
					got.Duplicates++
				case reordered:
					got.Reordered++
				}
			}
			got.Lost = s.missing(tt.sent)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("observe(%v), missing(%d) (-want +got):\n%s", tt.seqs, tt.sent, diff)
			}
		})
	}
}

func TestSubscriberHandle(t *testing.T) {
	// alice is a subscriber of a run with two publishers, in its window.
	r := newRun(Options{Subs: 1, Pubs: 2, Size: 64, Framing: Line})
	alice := &subscriber{run: r, seqs: make([]sequence, 2), hist: hdrhistogram.NewPacked(1, maxLatency, 3)}
	frame := newFrame(Line, 64)
	msg := func(pub uint16, seq uint64) []byte {
		encode(frame, header{pub: pub, seq: seq, ts: 1000})
		return bytes.Clone(frame)
	}
	alice.handle(probeFrame(Line, 7), 0, 0, 1e6)
	for _, p := range [][]byte{
		msg(0, 0), msg(1, 0), msg(0, 2), msg(0, 1), msg(1, 0), // reordered, duplicate
		msg(2, 0),                // no such publisher
		[]byte("M 0001 short\n"), // corrupt
		frame[:63],               // wrong size
		probeFrame(Line, 8),      // second probe, ignored
	} {
		alice.handle(p, 2e6, 0, 1e6) // received 1999 µs after it was sent, after the window
	}
	type counts struct {
		Ready                                                   bool
		Received, InWindow, Duplicates, Reordered, Corrupt, Lat int64
		Unready                                                 int64
	}
	got := counts{alice.ready, alice.received, alice.inWindow, alice.duplicates, alice.reordered, alice.corrupt,
		alice.hist.TotalCount(), r.unready.Load()}
	want := counts{Ready: true, Received: 5, Duplicates: 1, Reordered: 1, Corrupt: 3, Lat: 5}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("alice's counts (-want +got):\n%s", diff)
	}
	if p := alice.hist.ValueAtPercentile(50); p != 1999 {
		t.Errorf("latency p50 = %d µs; want 1999", p)
	}
}
