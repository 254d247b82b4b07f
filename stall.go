package main

import "time"

// How long a client with a full queue may hold the stream (docs/design.md,
// "Stalls"): --stall-limit, or only frozenLimit when the kernel shows that
// its peer has stopped reading, when it comes from an address closed as slow
// in the last penaltyTime (so reconnecting does not renew the right), or
// when clients together have spent the budget: one --stall-limit per
// budgetWindow.
const (
	// frozenLimit is the allowance of a client whose peer the kernel shows
	// has taken nothing (no byte acknowledged) for this long: about the
	// longest a frozen reader pauses the stream, where the kernel can tell.
	frozenLimit = 500 * time.Millisecond
	// penaltyTime is how long an address closed (or skipped) as slow gets
	// frozenLimit at most; maxPenalized bounds the hub's memory of them. Not
	// nothing: clients behind one NAT or proxy share an address.
	penaltyTime  = 5 * time.Minute
	maxPenalized = 1024
	// budgetWindow is the period over which clients that are behind the
	// others share one --stall-limit of waiting; past it each gets at most
	// frozenLimit.
	budgetWindow = time.Minute
)

// A stallBudget is a token bucket of waiting time: it holds at most
// --stall-limit and refills at one --stall-limit per budgetWindow. It is
// owned by the hub goroutine.
type stallBudget struct {
	left time.Duration // waiting still allowed
	at   time.Time     // when left was last brought up to date; zero before the first stall
}

// spend brings b up to date at now, for a bucket of capacity limit, and then
// takes d from it.
func (b *stallBudget) spend(now time.Time, limit, d time.Duration) {
	if !b.at.IsZero() {
		b.left = min(limit, b.left+time.Duration(float64(limit)*float64(now.Sub(b.at))/float64(budgetWindow)))
	}
	b.at = now
	b.left = max(0, b.left-d)
}

// waitRoom waits until n messages of size bytes fit c's queue and reports
// true, or reports false when c is slow: it is behind the others (at least
// half of them have room), its queue has been full, and its write blocked,
// for longer than its allowance (see allowance). When everyone is behind, the
// hub goes on waiting, and so slows its intake; a writer stuck past
// --write-timeout is closed and then discards, so the wait always ends.
//
// The time a queue has been full belongs to its client (fullSince), not to
// this wait, so several frozen readers are judged together: the stream waits
// about one allowance for all of them, not one each.
func (h *hub) waitRoom(c *client, n, size int) bool {
	c.stalled.Store(true) // before fits: a writer that frees room after it signals
	defer c.stalled.Store(false)
	start := time.Now()
	h.m.hubStalls.Add(1)
	defer func() { h.m.hubStallNanos.Add(uint64(time.Since(start))) }()
	h.stall.Reset(stallTick)
	defer h.stall.Stop()
	if c.fullSince.IsZero() {
		c.fullSince = start // c has no room for this batch, if for one message
	}
	h.markFull(start, c)
	last := start
	for !h.fits(c, n, size) {
		select {
		case <-h.room:
		case now := <-h.stall.C:
			h.markFull(now, c)
			behind := h.behind(c, now)
			if behind { // c alone holds the stream: that is what the budget bounds
				h.budget.spend(now, h.cfg.stallLimit, now.Sub(last))
			}
			last = now
			if behind && (h.frozen(c, now) || h.overstayed(c, now)) {
				return false
			}
			h.stall.Reset(stallTick)
		}
	}
	c.fullSince = time.Time{}
	return true
}

// markFull starts the full-queue clock of every client whose queue is full
// and stops it for every other one (but the one waited on, whose clock
// waitRoom keeps); and it samples the kernel's view of the peer of every
// client that is full or whose write is blocked (see probePeer). It runs on
// the hub goroutine while the hub waits, so that each client's clocks start
// when its queue filled or its peer stopped, whichever client the hub
// happens to be waiting on.
func (h *hub) markFull(now time.Time, waiting *client) {
	for _, c := range h.clients {
		full := c == waiting || h.queueFull(c)
		if !full {
			c.fullSince = time.Time{}
		} else if c.fullSince.IsZero() {
			c.fullSince = now
		}
		if !full && !h.stuck(c, now, stallTick) {
			c.ackedAt = time.Time{}
			continue
		}
		if acked, ok := probePeer(c.conn); !ok {
			c.ackedAt = time.Time{}
		} else if c.ackedAt.IsZero() || acked != c.acked {
			c.acked, c.ackedAt = acked, now
		}
	}
}

// queueFull reports whether c's queue has no room for one more message.
func (h *hub) queueFull(c *client) bool {
	return !h.fits(c, 1, 1)
}

// frozen reports whether the kernel shows that c's peer has acknowledged
// nothing for frozenLimit while c's write is blocked: it has stopped reading.
// A slow reader reopens its window, and its peer acknowledges, within that.
func (h *hub) frozen(c *client, now time.Time) bool {
	return !c.ackedAt.IsZero() && now.Sub(c.ackedAt) >= min(h.cfg.stallLimit, frozenLimit) && h.stuck(c, now, 0)
}

// overstayed reports whether c's queue has been full, and its write blocked,
// for longer than it may hold the stream: --stall-limit, or frozenLimit when
// it comes from a penalized address or the budget is spent.
func (h *hub) overstayed(c *client, now time.Time) bool {
	a := h.cfg.stallLimit
	if h.budget.left <= 0 || h.penalized(c, now) {
		a = min(a, frozenLimit)
	}
	return now.Sub(c.fullSince) >= a && h.stuck(c, now, a)
}

// stuck reports whether c's writer has been blocked in one write for d: its
// peer is not reading. With d = 0 it reports whether a write is in progress.
func (h *hub) stuck(c *client, now time.Time, d time.Duration) bool {
	since := c.writingSince.Load()
	return since != 0 && now.UnixNano()-since >= int64(d)
}

// behind reports whether at least half of the clients other than c have
// room, among those that are not suspects themselves: a client whose queue
// has been full, and whose write blocked, for the whole --stall-limit is no
// witness. So frozen readers cannot outvote the healthy ones for longer than
// that, while a publisher that outruns everyone (most queues full, writes
// blocked but moving) still only slows the stream.
func (h *hub) behind(c *client, now time.Time) bool {
	others, calm := 0, 0
	for _, o := range h.clients {
		switch {
		case o == c:
		case !h.congested(o):
			others++
			calm++
		case o.fullSince.IsZero() || now.Sub(o.fullSince) < h.cfg.stallLimit || !h.stuck(o, now, h.cfg.stallLimit):
			others++
		}
	}
	return others > 0 && 2*calm >= others
}

// penalize remembers c's address as closed or skipped as slow, so that the
// clients from it get no allowance for penaltyTime. The memory is bounded:
// past maxPenalized addresses, expired entries go first, then any.
func (h *hub) penalize(c *client) {
	ip := remoteIP(c.conn)
	if !ip.IsValid() {
		return
	}
	now := time.Now()
	if len(h.penalty) >= maxPenalized {
		for a, until := range h.penalty {
			if now.After(until) {
				delete(h.penalty, a)
			}
		}
		for a := range h.penalty {
			if len(h.penalty) < maxPenalized {
				break
			}
			delete(h.penalty, a)
		}
	}
	h.penalty[ip] = now.Add(penaltyTime)
}

// penalized reports whether c's address was closed or skipped as slow within
// penaltyTime.
func (h *hub) penalized(c *client, now time.Time) bool {
	if len(h.penalty) == 0 {
		return false
	}
	until, ok := h.penalty[remoteIP(c.conn)]
	return ok && now.Before(until)
}
