package loadgen

import (
	"slices"
	"sort"
	"sync/atomic"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// A subscriber is one subscriber connection and what its readLoop
// measured.
type subscriber struct {
	// Immutable after dialAll.
	run      *run
	node     int // index in the target's nodes
	conn     subConn
	done     chan struct{} // closed when readLoop returns
	orderMax int           // how many messages order may hold; 0 = no order check

	// Owned by readLoop; read by others only after done is closed.
	seqs         []sequence                    // one per publisher
	hist         *hdrhistogram.PackedHistogram // latency in µs of messages sent inside the window
	received     int64                         // messages (not probes), duplicates included
	inWindow     int64                         // messages received inside the window
	duplicates   int64                         // sequence numbers received twice
	reordered    int64                         // missing sequence numbers that arrived late
	corrupt      int64                         // frames that are neither a probe nor a message of --size
	ready        bool                          // saw a probe
	err          error                         // why readLoop returned
	disconnected bool                          // the connection ended before bench closed it
	order        []uint64                      // (publisher, seq) of each message in arrival order, duplicates left out; see orderKey

	// Accessed atomically: readLoop stores, the drain and progress loops load.
	count atomic.Int64 // a copy of received, stored after each read
}

// readLoop reads and accounts for everything subscriber s receives. It
// returns when the connection ends: closed by bench, by the server, or on a
// len32 frame that cannot be a bench message.
func (s *subscriber) readLoop() {
	defer close(s.done)
	r := s.run
	deliver := func(p []byte, now int64) { s.handle(p, now, r.winStart.Load(), r.winEnd.Load()) }
	for {
		err := s.conn.receive(deliver)
		s.count.Store(s.received)
		if err != nil {
			s.err = err
			s.disconnected = !r.closing.Load()
			return
		}
	}
}

// handle accounts for one received payload, received at now.
func (s *subscriber) handle(p []byte, now, ws, we int64) {
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
	h, ok := decode(p)
	if !ok || len(p) != r.opts.Size || int(h.pub) >= len(s.seqs) {
		s.corrupt++
		return
	}
	s.received++
	switch v := s.seqs[h.pub].observe(h.seq); {
	case v == duplicate:
		s.duplicates++
	case v == reordered:
		s.reordered++
		fallthrough
	default:
		if len(s.order) < s.orderMax {
			s.order = append(s.order, orderKey(h.pub, h.seq))
		}
	}
	if now >= ws && now < we {
		s.inWindow++
	}
	if h.ts >= ws && h.ts < we {
		_ = s.hist.RecordValue(min(max((now-h.ts)/1e3, 0), maxLatency))
	}
}

// verdict classifies one received sequence number.
type verdict int

const (
	inOrder   verdict = iota // the next expected number
	ahead                    // later than expected: the numbers skipped are missing for now
	reordered                // a missing number arrived late
	duplicate                // a number already received
)

// maxHoles bounds the gaps a sequence remembers. Past it the oldest gap
// is taken as final: it stays lost, and should its numbers still arrive they
// count as duplicates.
const maxHoles = 1024

// A sequence tracks one publisher's sequence as seen by one subscriber: which
// numbers are missing, so that a late arrival is told from a duplicate.
type sequence struct {
	next      uint64 // one past the highest number received
	holes     []hole // numbers below next not received yet, ascending, disjoint
	forgotten uint64 // numbers in holes dropped past maxHoles
}

// A hole is the missing range [lo, hi).
type hole struct{ lo, hi uint64 }

// observe records that seq arrived and says how it fits the sequence.
func (s *sequence) observe(seq uint64) verdict {
	switch {
	case seq == s.next:
		s.next++
		return inOrder
	case seq > s.next:
		s.addHole(hole{s.next, seq})
		s.next = seq + 1
		return ahead
	}
	i := sort.Search(len(s.holes), func(i int) bool { return s.holes[i].hi > seq })
	if i == len(s.holes) || s.holes[i].lo > seq {
		return duplicate
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
		s.holes = slices.Insert(s.holes, i+1, hole{seq + 1, h.hi})
		if len(s.holes) > maxHoles {
			s.forget()
		}
	}
	return reordered
}

// addHole appends h, which lies above every hole already held.
func (s *sequence) addHole(h hole) {
	if len(s.holes) == maxHoles {
		s.forget()
	}
	s.holes = append(s.holes, h)
}

// forget drops the oldest hole, counting its numbers as lost for good.
func (s *sequence) forget() {
	s.forgotten += s.holes[0].hi - s.holes[0].lo
	s.holes = slices.Delete(s.holes, 0, 1)
}

// missing returns how many of the sent numbers 0..sent-1 never arrived.
func (s *sequence) missing(sent uint64) uint64 {
	n := s.forgotten
	for _, h := range s.holes {
		n += h.hi - h.lo
	}
	if sent > s.next {
		n += sent - s.next
	}
	return n
}
