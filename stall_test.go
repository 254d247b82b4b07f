package main

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

// stallRig is a hub with two healthy clients, alice and bob, whose writers
// take 1ms a write, in the bubble of a synctest.Test.
type stallRig struct {
	t          *testing.T
	h          *hub
	alice, bob *fakeClient
}

func newStallRig(t *testing.T, cfg config) *stallRig {
	h := startHub(cfg)
	r := &stallRig{t: t, h: h, alice: newFakeClient(t, h, "alice"), bob: newFakeClient(t, h, "bob")}
	go r.alice.drain(time.Millisecond, true)
	go r.bob.drain(time.Millisecond, true)
	return r
}

// publish has alice publish n lines and returns how long it took until alice
// and bob had them all.
func (r *stallRig) publish(n int) time.Duration {
	r.t.Helper()
	start := time.Now()
	have := len(r.alice.received())
	for i := range n {
		r.alice.publish(fmt.Sprintf("m%d\n", i))
	}
	settle(r.t, have+n, r.alice, r.bob)
	return time.Since(start)
}

// stalled returns how long the hub has spent waiting for room in all.
func (r *stallRig) stalled() time.Duration { return time.Duration(r.h.m.hubStallNanos.Load()) }

// TestStallFrozenTogether: k frozen readers hold the stream
// about one stall limit in all, not one each: the time a queue has been full
// belongs to its client.
func TestStallFrozenTogether(t *testing.T) {
	for _, k := range []int{1, 2, 4} {
		t.Run(fmt.Sprintf("frozen=%d", k), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newStallRig(t, hubConfig())
				frozen := make([]*fakeClient, k)
				for i := range frozen {
					frozen[i] = newFakeClient(t, r.h, fmt.Sprintf("frozen%d", i))
					go frozen[i].freeze()
				}
				took := r.publish(200)
				if limit := r.h.cfg.stallLimit; took < limit || took > limit+time.Second {
					t.Errorf("with %d frozen readers publishing took %v; want about one stall limit (%v) plus the writes", k, took, limit)
				}
				if got := r.h.m.clients.Load(); got != 2 {
					t.Errorf("clients = %d; want 2, every frozen reader disconnected", got)
				}
				stopHub(r.h, append(frozen, r.alice, r.bob)...)
			})
		})
	}
}

// TestStallPenalty: once a client is closed as slow, a client from the same
// address holds the stream for frozenLimit at most, for penaltyTime, even
// with the budget back; one from another address is not affected.
func TestStallPenalty(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := hubConfig()
		r := newStallRig(t, cfg)
		first := newFakeClientFrom(t, r.h, "first", "127.0.0.2:4000")
		limit := cfg.stallLimit
		go first.freeze()
		r.publish(50)
		time.Sleep(budgetWindow) // the budget is back
		again := newFakeClientFrom(t, r.h, "again", "127.0.0.2:4001")
		go again.freeze()
		before := r.stalled()
		if took := r.publish(50); took > frozenLimit+time.Second {
			t.Errorf("a penalized address: publishing took %v; want about %v", took, frozenLimit)
		}
		if d := r.stalled() - before; d > frozenLimit+3*stallTick {
			t.Errorf("the hub waited %v for a penalized address; want about %v", d, frozenLimit)
		}
		time.Sleep(budgetWindow)
		other := newFakeClientFrom(t, r.h, "other", "127.0.0.3:4000")
		go other.freeze()
		if took := r.publish(50); took < limit {
			t.Errorf("another address: publishing took %v; want its allowance, %v", took, limit)
		}
		stopHub(r.h, r.alice, r.bob, first, again, other)
	})
}

// TestStallBudget: all clients together hold the stream one stall limit per
// budgetWindow: a frozen reader right after another one gets frozenLimit at
// most; a minute later the budget is back.
func TestStallBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newStallRig(t, hubConfig())
		limit := r.h.cfg.stallLimit
		var all []*fakeClient
		freeze := func(name string) {
			fc := newFakeClient(t, r.h, name)
			all = append(all, fc)
			go fc.freeze()
		}
		freeze("first")
		if took := r.publish(200); took < limit {
			t.Errorf("first frozen reader: publishing took %v; want its stall limit, %v", took, limit)
		}
		freeze("second")
		if took := r.publish(200); took > frozenLimit+time.Second {
			t.Errorf("second frozen reader, budget spent: publishing took %v; want about %v", took, frozenLimit)
		}
		time.Sleep(budgetWindow)
		freeze("third")
		if took := r.publish(200); took < limit {
			t.Errorf("a minute later: publishing took %v; want the stall limit again, %v", took, limit)
		}
		stopHub(r.h, append(all, r.alice, r.bob)...)
	})
}

// TestStallReconnectLoop: a frozen reader that reconnects every 5s while a
// publisher sends 100 msgs/s for 40s holds the stream no longer than the
// budget allows: one stall limit, then frozenLimit per connection (the
// attack that held it 24.8s of 40s when each connection had the full limit).
// Its connections come from no address (pipes), so the penalty does not
// apply; TestStallPenalty shows that it would cut them at once.
func TestStallReconnectLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newStallRig(t, hubConfig())
		const run = 40 * time.Second
		var frozen []*fakeClient
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := range int(run / (5 * time.Second)) {
				fc := newFakeClient(t, r.h, fmt.Sprintf("frozen%d", i))
				frozen = append(frozen, fc)
				go fc.freeze()
				time.Sleep(5 * time.Second)
			}
		}()
		start, sent := time.Now(), 0
		for time.Since(start) < run {
			r.alice.publish(fmt.Sprintf("m%d\n", sent))
			sent++
			time.Sleep(10 * time.Millisecond)
		}
		<-done
		settle(t, sent, r.alice, r.bob)
		limit := r.h.cfg.stallLimit
		budget := limit + time.Duration(run/(5*time.Second))*frozenLimit
		if got := r.stalled(); got > budget+time.Second {
			t.Errorf("the hub waited %v in %v; want at most the budget, %v", got, run, budget)
		}
		stopHub(r.h, append(frozen, r.alice, r.bob)...)
	})
}

// TestStallExcludeSenderPending: with --exclude-sender, the bytes of a
// client's own messages in a queued batch count toward its --max-pending,
// since the batch keeps them alive.
func TestStallExcludeSenderPending(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := hubConfig()
		cfg.excludeSender, cfg.slow = true, slowDrop
		cfg.queue, cfg.maxPending, cfg.maxMessage = 1024, 4096, 1024
		h := startHub(cfg)
		alice, bob := newFakeClient(t, h, "alice"), newFakeClient(t, h, "bob")
		go bob.drain(0, false)
		alice.writingSince.Store(time.Now().UnixNano()) // her writer is stuck in a write
		big := fmt.Sprintf("%01000d\n", 0)
		for range 20 { // alice's writer never runs: her queue only grows
			alice.publish(big)
			bob.publish("b\n")
			synctest.Wait()
		}
		time.Sleep(2 * frozenLimit) // the hub's wait on alice ends
		queued := 0
		for len(alice.send) > 0 {
			queued += (<-alice.send).bytes
		}
		if queued > cfg.maxPending || int64(queued) != alice.pendingBytes.Load() {
			t.Errorf("alice's queue holds %d bytes, counted %d; want at most --max-pending (%d), all counted",
				queued, alice.pendingBytes.Load(), cfg.maxPending)
		}
		alice.pendingMsgs.Store(0)
		alice.pendingBytes.Store(0)
		stopHub(h, alice, bob)
		synctest.Wait()
	})
}
