package main

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

// stallRig is a hub with five healthy clients, whose writers take 1ms a
// write, in the bubble of a synctest.Test.
type stallRig struct {
	t       *testing.T
	h       *hub
	healthy []*fakeClient
	others  []*fakeClient // every other client, for stopHub
}

func newStallRig(t *testing.T) *stallRig {
	r := &stallRig{t: t, h: startHub(hubConfig())}
	for _, name := range []string{"alice", "bob", "carol", "dave", "erin"} {
		fc := newFakeClient(t, r.h, name)
		go fc.drain(time.Millisecond, true)
		r.healthy = append(r.healthy, fc)
	}
	return r
}

// frozen registers a client from remote whose write never returns.
func (r *stallRig) frozen(name, remote string) *fakeClient {
	fc := newFakeClientFrom(r.t, r.h, name, remote)
	go fc.freeze()
	r.others = append(r.others, fc)
	return fc
}

// publish has alice publish n lines and returns how long it took until every
// healthy client had them all.
func (r *stallRig) publish(n int) time.Duration {
	r.t.Helper()
	start := time.Now()
	have := len(r.healthy[0].received())
	for i := range n {
		r.healthy[0].publish(fmt.Sprintf("m%d\n", i))
	}
	settle(r.t, have+n, r.healthy...)
	return time.Since(start)
}

func (r *stallRig) stop() { stopHub(r.h, append(r.healthy, r.others...)...) }

// TestStallFrozenTogether: k readers frozen at once, fewer than the healthy
// ones, hold the stream about one stall limit in all, not one each: the
// stall clock is each client's blocked write, not the hub's wait.
func TestStallFrozenTogether(t *testing.T) {
	for _, k := range []int{1, 2, 4} {
		t.Run(fmt.Sprintf("frozen=%d", k), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newStallRig(t)
				for i := range k {
					r.frozen(fmt.Sprintf("frozen%d", i), "")
				}
				limit := r.h.cfg.stallLimit
				if took := r.publish(200); took < limit || took > limit+time.Second {
					t.Errorf("with %d frozen readers publishing took %v; want about one stall limit (%v)", k, took, limit)
				}
				if got, want := r.h.m.clients.Load(), int64(len(r.healthy)); got != want {
					t.Errorf("clients = %d; want %d, every frozen reader disconnected", got, want)
				}
				r.stop()
			})
		})
	}
}

// TestStallPenalty: once a client is closed as slow, a client that connects
// from the same address later holds the stream penaltyLimit at most, for
// penaltyTime; a client from another address keeps the whole stall limit.
func TestStallPenalty(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newStallRig(t)
		limit := r.h.cfg.stallLimit
		r.frozen("first", "127.0.0.2:4001")
		if took := r.publish(50); took < limit {
			t.Errorf("first frozen reader: publishing took %v; want the stall limit, %v", took, limit)
		}
		r.frozen("again", "127.0.0.2:4002")
		if took := r.publish(50); took > penaltyLimit+time.Second || took < penaltyLimit {
			t.Errorf("a reconnect from the address: publishing took %v; want about %v", took, penaltyLimit)
		}
		r.frozen("other", "127.0.0.3:4000")
		if took := r.publish(50); took < limit {
			t.Errorf("another address: publishing took %v; want the stall limit, %v", took, limit)
		}
		time.Sleep(penaltyTime)
		r.frozen("later", "127.0.0.2:4003")
		if took := r.publish(50); took < limit {
			t.Errorf("after penaltyTime: publishing took %v; want the stall limit, %v", took, limit)
		}
		r.stop()
	})
}
