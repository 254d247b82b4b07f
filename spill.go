package main

import "time"

// The spill lets the stream go on without a reader that stopped: once a
// client has held the hub for --stall-pause while most others have room
// (waitRoom), the hub stops waiting on it and keeps what it misses here,
// feeding it as the client's writer frees room (feed). So a frozen reader
// pauses the stream for --stall-pause, not --stall-limit, and a reader that
// only paused (a starved process, a slow window) loses nothing. A spilled
// client is not judged while the spill has room: a frozen one is closed by
// --write-timeout, like any stuck writer. When the spill is full the hub
// waits on the client furthest behind as on a full queue, judging it at
// --stall-limit (spillAdd), so memory stays bounded and publishers feel the
// push-back as before. (Judging spilled clients at --stall-limit while the
// stream ran on cut readers that kept reading in a saturated process;
// docs/design.md, "The spill".)

const (
	// defaultStallPause is the default --stall-pause. It is not shorter
	// because a writer's socket can look stuck for a moment while its reader
	// works (Linux reopens a full receive window only after the reader freed
	// a sixteenth of it), and every pause of a healthy reader past it costs
	// memory, not messages.
	defaultStallPause = 500 * time.Millisecond
	// defaultSpillBuffer is the default --spill-buffer.
	defaultSpillBuffer = 64 << 20
	// msgCost is what the spill counts for each message header it keeps
	// alive, beyond the message's bytes: a flood of one-byte reads must not
	// hold more memory than the flag says.
	msgCost = 64
)

// A verdict is what waitRoom decides about a client with a full queue.
type verdict int

const (
	roomFree   verdict = iota // the messages fit now
	goOn                      // c is behind the others: go on without it, spilling what it misses
	slowClient                // c is slow: --slow applies
)

// A spill holds, for the clients the hub went on without, every batch fanned
// out since the earliest of them missed its first, shared by all of them.
// Owned by the hub goroutine.
type spill struct {
	batches []*batch  // batches[i] has sequence base+i
	base    uint64    // sequence of batches[0]
	cost    int       // bytes, and msgCost per message, of batches: at most --spill-buffer
	clients []*client // clients with spilled set, in no order
}

// end returns the sequence the next batch added will have.
func (s *spill) end() uint64 { return s.base + uint64(len(s.batches)) }

// last reports whether b is the batch added last: another client missed it
// already.
func (s *spill) last(b *batch) bool { return len(s.batches) > 0 && s.batches[len(s.batches)-1] == b }

// batchCost is what b counts toward --spill-buffer.
func batchCost(b *batch) int { return b.bytes + msgCost*len(b.msgs) }

// spillFits reports whether the hub can go on without a client that misses b.
func (h *hub) spillFits(b *batch) bool {
	s := &h.sp
	return s.last(b) || s.cost+batchCost(b) <= h.cfg.spillBuffer
}

// push appends b.
func (h *hub) push(b *batch) {
	s := &h.sp
	s.batches = append(s.batches, b)
	s.cost += batchCost(b)
	h.m.spillBytes.Store(int64(s.cost))
}

// goOnWithout spills c, whose queue has no room for b: from now on the hub
// keeps what c misses, b first, and feeds it as c's writer frees room.
func (h *hub) goOnWithout(c *client, b *batch, waited time.Duration) {
	s := &h.sp
	if !s.last(b) {
		h.push(b)
	}
	c.spilled, c.next, c.spillAt = true, s.end()-1, len(s.clients)
	c.stalled.Store(true) // its writer wakes the hub (room) whenever it frees room
	s.clients = append(s.clients, c)
	h.m.spills.Add(1)
	h.dropLog.Warn().Uint64("client_id", c.id).Dur("waited", waited).
		Int64("queue_len", c.pendingMsgs.Load()).Int64("pending_bytes", c.pendingBytes.Load()).
		Msg("client fell behind; the stream goes on without it, keeping what it misses")
}

// spillAdd adds b, which is being fanned out, to the spill if anyone is
// spilled. While it is full, the hub waits on a client at its front as it
// would on a full queue, and so slows intake.
func (h *hub) spillAdd(b *batch) {
	s := &h.sp
	for len(s.clients) > 0 && s.cost+batchCost(b) > h.cfg.spillBuffer {
		c := s.clients[0]
		for _, o := range s.clients[1:] {
			if o.next < c.next {
				c = o
			}
		}
		if !h.feed(c) {
			n, size := h.shareOf(c, s.batches[c.next-s.base])
			if h.waitRoom(c, n, size, nil) == slowClient {
				h.abandon(c)
			} else {
				h.feed(c)
			}
		}
		h.leaveIfDone(c)
		h.trim()
	}
	if len(s.clients) > 0 {
		h.push(b)
	}
}

// feed queues for c what it missed, while it fits. It reports true, and
// ends c's spill, once c has everything. The caller trims.
func (h *hub) feed(c *client) bool {
	s := &h.sp
	for c.next < s.end() {
		b := s.batches[c.next-s.base]
		if n, size := h.shareOf(c, b); n > 0 {
			if !h.fits(c, n, size) {
				return false
			}
			h.enqueue(c, b, n, size)
		}
		c.next++
	}
	h.unspill(c)
	return true
}

// feedAll feeds every spilled client; the hub calls it when a writer frees
// room and after each fan-out.
func (h *hub) feedAll() {
	s := &h.sp
	if len(s.clients) == 0 {
		return // the common case: after each fan-out
	}
	for i := len(s.clients) - 1; i >= 0; i-- { // feed may remove s.clients[i]
		c := s.clients[i]
		h.feed(c)
		h.leaveIfDone(c)
	}
	h.trim()
}

// abandon applies --slow to spilled c: it is disconnected, or under
// --slow=drop what it missed is counted dropped and it lags (see deliver).
// The caller trims.
func (h *hub) abandon(c *client) {
	h.penalize(c)
	if h.cfg.slow == slowDisconnect {
		h.remove(c, reasonSlowClient)
		return
	}
	h.dropSpill(c)
	c.lagging = true
	h.unspill(c)
	h.leaveIfDone(c)
}

// dropSpill counts what spilled c missed as dropped for it.
func (h *hub) dropSpill(c *client) {
	s := &h.sp
	for seq := c.next; seq < s.end(); seq++ {
		if n, size := h.shareOf(c, s.batches[seq-s.base]); n > 0 {
			h.drop(c, n, size)
		}
	}
}

// leaveIfDone removes c if it is registered, no longer spilled, and its
// reader left while it was: left keeps such a client until it has what it
// missed.
func (h *hub) leaveIfDone(c *client) {
	if !c.spilled && !c.reading && c.index >= 0 && !h.closing() {
		h.remove(c, reasonNone)
	}
}

// catchUp queues everything c missed, waiting for room as deliver does, and
// reports false if c was judged slow first. remove calls it at shutdown, so
// that a client still spilled gets the messages it was owed.
func (h *hub) catchUp(c *client) bool {
	for !h.feed(c) {
		n, size := h.shareOf(c, h.sp.batches[c.next-h.sp.base])
		if h.waitRoom(c, n, size, nil) == slowClient {
			return false
		}
	}
	return true
}

// unspill ends c's spill, if any. The caller trims.
func (h *hub) unspill(c *client) {
	if !c.spilled {
		return
	}
	s := &h.sp
	c.spilled = false
	c.stalled.Store(false)
	last := len(s.clients) - 1
	s.clients[c.spillAt] = s.clients[last]
	s.clients[c.spillAt].spillAt = c.spillAt
	s.clients[last] = nil
	s.clients = s.clients[:last]
}

// trim drops the batches every spilled client has been fed.
func (h *hub) trim() {
	s := &h.sp
	keep := s.end()
	for _, c := range s.clients {
		keep = min(keep, c.next)
	}
	k := int(keep - s.base)
	for i := range k {
		s.cost -= batchCost(s.batches[i])
		s.batches[i] = nil
	}
	s.batches, s.base = s.batches[k:], keep
	if len(s.clients) == 0 {
		s.batches = nil // let the array go
	}
	h.m.spillBytes.Store(int64(s.cost))
}

// shareOf returns how many of b's messages are for c, and b's bytes (see
// fanout).
func (h *hub) shareOf(c *client, b *batch) (n, size int) {
	if !h.cfg.excludeSender {
		return b.count, b.bytes
	}
	return c.share(b.msgs)
}
