package main

import "time"

// How long a client may hold the stream (see allowance). The numbers are
// documented in the README and docs/design.md.
const (
	// budgetWindow is the stall budget's period. The budget is a token
	// bucket of waiting, one --stall-limit full at start and refilled at one
	// --stall-limit per budgetWindow; the hub's waits on clients judged slow
	// are taken from it. While it is not full, a client that connected since
	// it was first drawn on may hold the stream only what it holds.
	budgetWindow = time.Minute
	// penaltyTime is how long an address stays marked after a client from it
	// was closed or skipped as slow, or closed for --write-timeout (a frozen
	// reader the hub went on without); a client that connects from it meanwhile
	// gets no allowance at all, so that a frozen reader that reconnects does
	// not hold the stream again. One budgetWindow: many honest clients can
	// share an address (a NAT, a proxy), and the budget bounds the rest.
	// maxPenalized bounds the hub's memory of such addresses.
	penaltyTime  = budgetWindow
	maxPenalized = 1024
)

// A stallBudget is the waiting the hub may still spend on clients that turn
// out to be slow (see allowance). Owned by the hub goroutine.
type stallBudget struct {
	left  time.Duration // at most --stall-limit
	at    time.Time     // when left was last refilled
	drawn time.Time     // when the wait that first drew on it since it was full began; zero while full
}

// waitRoom waits until n messages of size bytes fit c's queue and reports
// roomFree, or gives up on c when it is behind the others: its socket has
// taken nothing for a while (a write blocked all that time) and at least half
// of the other clients have room. Then, if the spill can take b, the batch c
// misses, and c's allowance (see allowance) is longer than --stall-pause, it
// reports goOn after --stall-pause, and otherwise slowClient after the
// allowance. b is nil for a client spilled already. A client whose writer is
// merely waiting for a CPU is never judged. When everyone is behind, the hub
// goes on waiting, and so slows its intake; a writer stuck past
// --write-timeout is closed and then discards, so the wait always ends.
//
// The stall clock is the client's own, its writer's blocked write, not this
// wait's: k readers frozen at once are judged together, after about one
// pause in all, whichever of them the hub happens to wait on first.
func (h *hub) waitRoom(c *client, n, size int, b *batch) verdict {
	c.stalled.Store(true) // before fits: a writer that frees room after it signals
	defer func() { c.stalled.Store(c.spilled) }()
	start := time.Now()
	h.m.hubStalls.Add(1)
	defer func() { h.m.hubStallNanos.Add(uint64(time.Since(start))) }()
	h.stall.Reset(stallTick)
	defer h.stall.Stop()
	for !h.fits(c, n, size) {
		select {
		case <-h.room:
		case now := <-h.stall.C:
			allow := h.allowance(c, now)
			wait := allow
			if b != nil && allow > h.cfg.stallPause && h.spillFits(b) {
				wait = h.cfg.stallPause
			}
			if h.stuck(c, now, wait) && h.behind(c) {
				h.spend(start, now)
				if wait < allow {
					h.goOnWithout(c, b, now.Sub(start))
					return goOn
				}
				return slowClient
			}
			h.stall.Reset(stallTick)
		}
	}
	return roomFree
}

// allowance returns how long c's write may be blocked before c may be judged
// slow. Clients that were connected before the stall budget was drawn on
// get --stall-limit: they are judged together, so k frozen readers hold the
// stream one limit in all. A client that connected since gets only what the
// budget holds (it refills in budgetWindow), and one from a penalized
// address nothing: frozen readers that reconnect, from any number of
// addresses, hold the stream no more than the budget allows, while the
// readers that were there before keep their whole allowance and so are never
// cut for the attack's sake.
func (h *hub) allowance(c *client, now time.Time) time.Duration {
	if h.penalized(c, now) {
		return 0
	}
	left := h.budgetLeft(now)
	if b := h.budget.drawn; b.IsZero() || c.connectedAt.Before(b) {
		return h.cfg.stallLimit
	}
	return min(h.cfg.stallLimit, left)
}

// budgetLeft refills the stall budget for the time since it was last
// refilled and returns what it holds.
func (h *hub) budgetLeft(now time.Time) time.Duration {
	b := &h.budget
	if gone := now.Sub(b.at); gone >= budgetWindow {
		b.left = h.cfg.stallLimit
	} else if gone > 0 {
		b.left = min(h.cfg.stallLimit, b.left+time.Duration(float64(h.cfg.stallLimit)*float64(gone)/float64(budgetWindow)))
	}
	b.at = now
	if b.left == h.cfg.stallLimit {
		b.drawn = time.Time{}
	}
	return b.left
}

// spend takes the hub's wait on a client judged slow or spilled, from start
// to now, from the budget.
func (h *hub) spend(start, now time.Time) {
	h.m.slowWaitNanos.Add(uint64(now.Sub(start)))
	h.budgetLeft(now)
	h.budget.left = max(0, h.budget.left-now.Sub(start))
	if h.budget.drawn.IsZero() {
		h.budget.drawn = start
	}
}

// stuck reports whether c's writer has been blocked in one write for d: its
// peer is not reading.
func (h *hub) stuck(c *client, now time.Time, d time.Duration) bool {
	since := c.writingSince.Load()
	return since != 0 && now.UnixNano()-since >= int64(d)
}

// behind reports whether at least half of the clients other than c have room.
func (h *hub) behind(c *client) bool {
	others, calm := 0, 0
	for _, o := range h.clients {
		if o != c {
			others++
			if !h.congested(o) {
				calm++
			}
		}
	}
	return others > 0 && 2*calm >= others
}

// penalize marks c's address as closed or skipped as slow now (see
// penaltyTime). Past maxPenalized addresses, expired marks go first, then any.
func (h *hub) penalize(c *client) {
	ip := remoteIP(c.conn)
	if !ip.IsValid() {
		return
	}
	now := time.Now()
	if len(h.penalty) >= maxPenalized {
		for a, at := range h.penalty {
			if now.Sub(at) >= penaltyTime {
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
	h.penalty[ip] = now
}

// penalized reports whether c connected from a marked address after the
// mark, within penaltyTime of it. Clients connected before are not affected:
// many healthy clients can share one address (a NAT, a proxy), and one slow
// reader must not shorten their allowance.
func (h *hub) penalized(c *client, now time.Time) bool {
	if len(h.penalty) == 0 {
		return false
	}
	at, ok := h.penalty[remoteIP(c.conn)]
	return ok && c.connectedAt.After(at) && now.Sub(at) < penaltyTime
}
