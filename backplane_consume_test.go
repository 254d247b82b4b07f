package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// A streamMsg is a stream message as the consumer gets it: only its data and
// headers are read by backplane.messages.
type streamMsg struct {
	jetstream.Msg
	data []byte
	hdr  nats.Header
}

func (m streamMsg) Data() []byte         { return m.data }
func (m streamMsg) Headers() nats.Header { return m.hdr }

// A wantMsg is what a test expects of one message handed to the hub.
type wantMsg struct {
	From  uint64 // client id, 0 for none
	Data  string
	Count int
}

// TestBackplaneMessagesJoinReads checks how the consumer turns one stream
// message into messages for the hub: neighbouring reads the hub treats alike
// become one message, within the bounds of one reader's read, and a read from
// one of this node's clients stays apart under --exclude-sender.
func TestBackplaneMessagesJoinReads(t *testing.T) {
	alice, bob := &client{id: 7}, &client{id: 9}
	const self, other = "node-self", "node-other"
	tests := []struct {
		name          string
		excludeSender bool
		maxFrame      int // bytes of one reader's read at most
		maxBatchMsgs  int
		node          string
		parts         string // hdrParts; empty: a message not from echohub
		data          string
		want          []wantMsg
		lost          uint64
	}{
		{
			name: "three reads become one message", maxFrame: 64, maxBatchMsgs: 256, node: other,
			parts: "7:2:1 3:4:2 9:2:1", data: "a\nb\nc\nd\n",
			want: []wantMsg{{Data: "a\nb\nc\nd\n", Count: 4}},
		},
		{
			name: "split at maxBatchMsgs", maxFrame: 64, maxBatchMsgs: 3, node: other,
			parts: "7:2:1 3:4:2 9:2:1", data: "a\nb\nc\nd\n",
			want: []wantMsg{{Data: "a\nb\nc\n", Count: 3}, {Data: "d\n", Count: 1}},
		},
		{
			name: "split at the bytes of one read", maxFrame: 4, maxBatchMsgs: 256, node: other,
			parts: "7:2:1 3:4:2 9:2:1", data: "a\nb\nc\nd\n",
			want: []wantMsg{{Data: "a\n", Count: 1}, {Data: "b\nc\n", Count: 2}, {Data: "d\n", Count: 1}},
		},
		{
			name: "exclude-sender, another node's reads are joined", excludeSender: true, maxFrame: 64, maxBatchMsgs: 256, node: other,
			parts: "7:2:1 9:2:1", data: "a\nb\n",
			want: []wantMsg{{Data: "a\nb\n", Count: 2}},
		},
		{
			name: "exclude-sender, this node's reads keep their sender", excludeSender: true, maxFrame: 64, maxBatchMsgs: 256, node: self,
			parts: "7:2:1 7:2:1 9:2:1 4:2:1 5:2:1 7:2:1", data: "a\nb\nc\nd\ne\nf\n",
			want: []wantMsg{
				{From: 7, Data: "a\nb\n", Count: 2},
				{From: 9, Data: "c\n", Count: 1},
				{Data: "d\ne\n", Count: 2}, // clients 4 and 5 have left this node
				{From: 7, Data: "f\n", Count: 1},
			},
		},
		{
			name: "not from echohub: one message", maxFrame: 64, maxBatchMsgs: 256, node: "",
			data: "x\ny\n",
			want: []wantMsg{{Data: "x\ny\n", Count: 1}},
		},
		{
			name: "a read past the data is malformed", maxFrame: 64, maxBatchMsgs: 256, node: other,
			parts: "7:2:1 9:9:1", data: "a\nb\n",
			lost: 1,
		},
		{
			name: "a part without its count is malformed", maxFrame: 64, maxBatchMsgs: 256, node: other,
			parts: "7:2", data: "a\n",
			lost: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.excludeSender = tt.excludeSender
			b := &backplane{
				cfg:      cfg,
				node:     self,
				maxFrame: tt.maxFrame,
				hub:      &hub{maxBatchMsgs: tt.maxBatchMsgs},
				senders:  map[uint64]*client{alice.id: alice, bob.id: bob},
				lossLog:  zerolog.Nop(),
			}
			msg := streamMsg{data: []byte(tt.data), hdr: nats.Header{}}
			if tt.parts != "" {
				msg.hdr.Set(hdrParts, tt.parts)
				msg.hdr.Set(hdrNode, tt.node)
			}
			var got []wantMsg
			for _, m := range b.messages(msg, nil) {
				w := wantMsg{Data: string(m.data), Count: m.count}
				if m.from != nil {
					w.From = m.from.id
				}
				if cap(m.data) != len(m.data) {
					t.Errorf("message %q has room to append into its neighbour: cap %d", m.data, cap(m.data))
				}
				got = append(got, w)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("messages(%q, %q) (-want +got):\n%s", tt.parts, strings.ReplaceAll(tt.data, "\n", `\n`), diff)
			}
			if n := b.lost.Load(); n != tt.lost {
				t.Errorf("lost = %d, want %d", n, tt.lost)
			}
		})
	}
}

// FuzzBackplaneMessages feeds backplane.messages any header and data, as any
// publisher on the stream's subject could: it must never panic, and it hands
// the hub either nothing (the message counted as lost) or the data's
// described bytes, in order, each message with no room to append into the
// next.
func FuzzBackplaneMessages(f *testing.F) {
	f.Add("7:2:1 3:4:2 9:2:1", []byte("a\nb\nc\nd\n"), true)
	f.Add("7:2:1 9:9:1", []byte("a\nb\n"), false)
	f.Add("7:2", []byte("a\n"), false)
	f.Add("", []byte("x\ny\n"), false)
	f.Add("1:-1:1 :: 18446744073709551616:1:1", []byte("abc"), true)
	f.Fuzz(func(t *testing.T, parts string, data []byte, local bool) {
		cfg := testConfig()
		cfg.excludeSender = true
		b := &backplane{
			cfg: cfg, node: "self", maxFrame: 8, hub: &hub{maxBatchMsgs: 3},
			senders: map[uint64]*client{7: {id: 7}}, lossLog: zerolog.Nop(),
		}
		msg := streamMsg{data: data, hdr: nats.Header{}}
		if parts != "" {
			msg.hdr.Set(hdrParts, parts)
			if local {
				msg.hdr.Set(hdrNode, "self")
			}
		}
		ms := b.messages(msg, nil)
		if b.lost.Load() > 0 && len(ms) > 0 {
			t.Fatalf("%d messages handed over for a message counted as lost", len(ms))
		}
		var joined []byte
		for _, m := range ms {
			if cap(m.data) != len(m.data) || m.count <= 0 {
				t.Fatalf("message %q: cap %d, count %d", m.data, cap(m.data), m.count)
			}
			joined = append(joined, m.data...)
		}
		if !strings.HasPrefix(string(data), string(joined)) {
			t.Fatalf("handed over %q, not a prefix of the data %q", joined, data)
		}
	})
}
