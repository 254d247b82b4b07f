package main

import "time"

const (
	// penaltyTime is how long an address stays marked after a client from it
	// was closed or skipped as slow; a client that connects from it meanwhile
	// may hold the stream for penaltyLimit at most, so that a frozen reader
	// that reconnects does not get a fresh --stall-limit each time.
	// maxPenalized bounds the hub's memory of such addresses.
	penaltyTime  = 5 * time.Minute
	penaltyLimit = 500 * time.Millisecond
	maxPenalized = 1024
)

// waitRoom waits until n messages of size bytes fit c's queue and reports
// true, or reports false when c is behind the others: its socket has taken
// nothing for its allowance (a write blocked all that time: --stall-limit, or
// penaltyLimit, see allowance) and at least half of the other clients have
// room. A client whose writer is merely waiting for a CPU is never judged.
// When everyone is behind, the hub goes on waiting, and so slows its intake;
// a writer stuck past --write-timeout is closed and then discards, so the
// wait always ends.
//
// The stall clock is the client's own, its writer's blocked write, not this
// wait's: k readers frozen at once are judged together, after about one
// allowance in all, whichever of them the hub happens to wait on first.
func (h *hub) waitRoom(c *client, n, size int) bool {
	c.stalled.Store(true) // before fits: a writer that frees room after it signals
	defer c.stalled.Store(false)
	start := time.Now()
	h.m.hubStalls.Add(1)
	defer func() { h.m.hubStallNanos.Add(uint64(time.Since(start))) }()
	h.stall.Reset(stallTick)
	defer h.stall.Stop()
	for !h.fits(c, n, size) {
		select {
		case <-h.room:
		case now := <-h.stall.C:
			if h.stuck(c, now, h.allowance(c, now)) && h.behind(c) {
				return false
			}
			h.stall.Reset(stallTick)
		}
	}
	return true
}

// allowance returns how long c's write may be blocked before c may be judged
// slow: --stall-limit, or penaltyLimit for a client from a penalized address.
func (h *hub) allowance(c *client, now time.Time) time.Duration {
	if h.penalized(c, now) {
		return min(h.cfg.stallLimit, penaltyLimit)
	}
	return h.cfg.stallLimit
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
