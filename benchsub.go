package main

import (
	"net"
	"slices"
	"sort"
	"sync/atomic"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// A benchSubscriber is one subscriber connection and what its readLoop
// measured.
type benchSubscriber struct {
	// Immutable after dialAll.
	run  *benchRun
	conn net.Conn
	done chan struct{} // closed when readLoop returns

	// Owned by readLoop; read by others only after done is closed.
	seqs         []benchSeq                    // one per publisher
	hist         *hdrhistogram.PackedHistogram // latency in µs of messages sent inside the window
	received     int64                         // messages (not probes), duplicates included
	inWindow     int64                         // messages received inside the window
	duplicates   int64                         // sequence numbers received twice
	reordered    int64                         // missing sequence numbers that arrived late
	corrupt      int64                         // frames that are neither a probe nor a message of --size
	ready        bool                          // saw a probe
	err          error                         // why readLoop returned
	disconnected bool                          // the connection ended before bench closed it

	// Accessed atomically: readLoop stores, the drain and progress loops load.
	count atomic.Int64 // a copy of received, stored after each read
}

// readLoop reads and accounts for everything subscriber s receives. It
// returns when the connection ends: closed by bench, by the server, or on a
// len32 frame that cannot be a bench message.
func (s *benchSubscriber) readLoop() {
	defer close(s.done)
	r := s.run
	buf := make([]byte, max(benchReadBuffer, 2*r.wire))
	var start, end int
	for {
		n, err := s.conn.Read(buf[end:])
		if n > 0 {
			// One receive time for everything this read completed.
			now := benchNow()
			ws, we := r.winStart.Load(), r.winEnd.Load()
			end += n
			for start < end {
				payload, k, ferr := benchNextFrame(r.opts.framing, buf[start:end], len(buf)-4)
				if ferr != nil {
					// The stream cannot be resynchronised: give up on it.
					err = ferr
					_ = s.conn.Close()
					break
				}
				if k == 0 {
					break
				}
				s.handle(payload, now, ws, we)
				start += k
			}
			s.count.Store(s.received)
			switch {
			case start == end:
				start, end = 0, 0
			case start == 0 && end == len(buf): // a line longer than the buffer
				s.corrupt++
				start, end = 0, 0
			case len(buf)-end < r.wire: // make room for a whole message
				end = copy(buf, buf[start:end])
				start = 0
			}
		}
		if err != nil {
			s.err = err
			s.disconnected = !r.closing.Load()
			return
		}
	}
}

// handle accounts for one received payload, received at now.
func (s *benchSubscriber) handle(p []byte, now, ws, we int64) {
	r := s.run
	if len(p) == r.probeLen && p[0] == 'P' {
		if !s.ready {
			s.ready = true
			if r.unready.Add(-1) == 0 {
				close(r.ready)
			}
		}
		return
	}
	h, ok := benchDecode(p)
	if !ok || len(p) != r.opts.size || int(h.pub) >= len(s.seqs) {
		s.corrupt++
		return
	}
	s.received++
	switch s.seqs[h.pub].observe(h.seq) {
	case benchDuplicate:
		s.duplicates++
	case benchReordered:
		s.reordered++
	}
	if now >= ws && now < we {
		s.inWindow++
	}
	if h.ts >= ws && h.ts < we {
		_ = s.hist.RecordValue(min(max((now-h.ts)/1e3, 0), benchMaxLatency))
	}
}

// benchVerdict classifies one received sequence number.
type benchVerdict int

const (
	benchInOrder   benchVerdict = iota // the next expected number
	benchAhead                         // later than expected: the numbers skipped are missing for now
	benchReordered                     // a missing number arrived late
	benchDuplicate                     // a number already received
)

// benchMaxHoles bounds the gaps a benchSeq remembers. Past it the oldest gap
// is taken as final: it stays lost, and should its numbers still arrive they
// count as duplicates.
const benchMaxHoles = 1024

// A benchSeq tracks one publisher's sequence as seen by one subscriber: which
// numbers are missing, so that a late arrival is told from a duplicate.
type benchSeq struct {
	next      uint64      // one past the highest number received
	holes     []benchHole // numbers below next not received yet, ascending, disjoint
	forgotten uint64      // numbers in holes dropped past benchMaxHoles
}

// A benchHole is the missing range [lo, hi).
type benchHole struct{ lo, hi uint64 }

// observe records that seq arrived and says how it fits the sequence.
func (s *benchSeq) observe(seq uint64) benchVerdict {
	switch {
	case seq == s.next:
		s.next++
		return benchInOrder
	case seq > s.next:
		s.addHole(benchHole{s.next, seq})
		s.next = seq + 1
		return benchAhead
	}
	i := sort.Search(len(s.holes), func(i int) bool { return s.holes[i].hi > seq })
	if i == len(s.holes) || s.holes[i].lo > seq {
		return benchDuplicate
	}
	h := s.holes[i]
	switch {
	case h.hi-h.lo == 1:
		s.holes = slices.Delete(s.holes, i, i+1)
	case seq == h.lo:
		s.holes[i].lo++
	case seq == h.hi-1:
		s.holes[i].hi--
	default: // split the hole around seq
		s.holes[i].hi = seq
		s.holes = slices.Insert(s.holes, i+1, benchHole{seq + 1, h.hi})
		if len(s.holes) > benchMaxHoles {
			s.forget()
		}
	}
	return benchReordered
}

// addHole appends h, which lies above every hole already held.
func (s *benchSeq) addHole(h benchHole) {
	if len(s.holes) == benchMaxHoles {
		s.forget()
	}
	s.holes = append(s.holes, h)
}

// forget drops the oldest hole, counting its numbers as lost for good.
func (s *benchSeq) forget() {
	s.forgotten += s.holes[0].hi - s.holes[0].lo
	s.holes = slices.Delete(s.holes, 0, 1)
}

// missing returns how many of the sent numbers 0..sent-1 never arrived.
func (s *benchSeq) missing(sent uint64) uint64 {
	n := s.forgotten
	for _, h := range s.holes {
		n += h.hi - h.lo
	}
	if sent > s.next {
		n += sent - s.next
	}
	return n
}
