package main

import "time"

// waitRoom waits until n messages of size bytes fit c's queue and reports
// true, or reports false when c is behind the others: its queue has been full
// for the stall limit, its socket has taken nothing for as long (a write blocked
// all that time), and at least half of the other clients have room. A client
// whose writer is merely waiting for a CPU is never judged. When everyone is
// behind, the hub goes on waiting, and so slows its intake; a writer stuck
// past --write-timeout is closed and then discards, so the wait always ends.
//
// The stall clock is this wait's: k readers frozen at once can hold the
// stream k times --stall-limit (docs/design.md says why it is not yet the
// client's own).
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
			if now.Sub(start) >= h.cfg.stallLimit && h.stuck(c, now) && h.behind(c) {
				return false
			}
			h.stall.Reset(stallTick)
		}
	}
	return true
}

// stuck reports whether c's writer has been blocked in one write for
// stallLimit: its peer is not reading.
func (h *hub) stuck(c *client, now time.Time) bool {
	since := c.writingSince.Load()
	return since != 0 && now.UnixNano()-since >= int64(h.cfg.stallLimit)
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
