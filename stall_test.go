package main

import (
	"fmt"
	"strings"
	"sync"
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
	base    time.Duration // what publish(50) takes with no one frozen
}

func newStallRig(t *testing.T, cfg config) *stallRig {
	r := &stallRig{t: t, h: startHub(cfg)}
	for _, name := range []string{"alice", "bob", "carol", "dave", "erin"} {
		fc := newFakeClient(t, r.h, name)
		go fc.drain(time.Millisecond, true)
		r.healthy = append(r.healthy, fc)
	}
	r.base = r.publish(50)
	return r
}

// noSpill returns hubConfig with --spill-buffer 0: the hub waits on a
// frozen reader its whole allowance, as it does when the spill is full.
func noSpill() config {
	cfg := hubConfig()
	cfg.spillBuffer = 0
	return cfg
}

// bothSpills runs f in a synctest bubble as the subtests spill=false and
// spill=true, with a rig whose hub has the spill off or on, and how long one
// frozen reader then holds the stream: the stall limit, or --stall-pause.
func bothSpills(t *testing.T, f func(t *testing.T, r *stallRig, hold time.Duration)) {
	for _, spill := range []bool{false, true} {
		t.Run(fmt.Sprintf("spill=%v", spill), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg, hold := noSpill(), defaultStallLimit
				if spill {
					cfg, hold = hubConfig(), defaultStallPause
				}
				f(t, newStallRig(t, cfg), hold)
			})
		})
	}
}

// frozen registers a client from remote whose write never returns.
func (r *stallRig) frozen(name, remote string) *fakeClient {
	fc := newFakeClientFrom(r.t, r.h, name, remote)
	go fc.freeze()
	r.others = append(r.others, fc)
	return fc
}

// publish has alice publish n lines and returns how long it took until every
// other healthy client had them all.
func (r *stallRig) publish(n int) time.Duration {
	r.t.Helper()
	start := time.Now()
	have := len(r.healthy[1].received())
	for i := range n {
		r.healthy[0].publish(fmt.Sprintf("m%d\n", i))
	}
	settle(r.t, have+n, r.healthy[1:]...) // not the publisher: it may not get its own
	return time.Since(start)
}

func (r *stallRig) stop() { stopHub(r.h, append(r.healthy, r.others...)...) }

// holds publishes past the frozen readers and checks that the stream was
// held from lo to hi (no upper bound if hi is 0).
func (r *stallRig) holds(what string, lo, hi time.Duration) {
	r.t.Helper()
	if took := r.publish(50); took < lo || hi > 0 && took > hi {
		r.t.Errorf("%s: publishing took %v; want %v to %v", what, took, lo, hi)
	}
}

// frozenGone checks, once --write-timeout has passed, that every frozen
// reader has been disconnected and the spill holds nothing.
func (r *stallRig) frozenGone() {
	r.t.Helper()
	time.Sleep(r.h.cfg.writeTimeout + stallTick)
	synctest.Wait()
	if got := r.h.m.spillBytes.Load(); got != 0 {
		r.t.Errorf("spill holds %d bytes; want 0", got)
	}
	if got, want := r.h.m.clients.Load(), int64(len(r.healthy)); got != want {
		r.t.Errorf("clients = %d; want %d, every frozen reader disconnected", got, want)
	}
}

// TestStallFrozenTogether: k readers frozen at once, fewer than the healthy
// ones, pause the stream about one --stall-pause in all, not one each: the
// stall clock is each client's blocked write, not the hub's wait. Without
// the spill they hold it about one stall limit in all, and are then
// disconnected; with it, --write-timeout closes them.
func TestStallFrozenTogether(t *testing.T) {
	for _, k := range []int{1, 2, 4} {
		t.Run(fmt.Sprintf("frozen=%d", k), func(t *testing.T) {
			bothSpills(t, func(t *testing.T, r *stallRig, hold time.Duration) {
				for i := range k {
					r.frozen(fmt.Sprintf("frozen%d", i), "")
				}
				r.holds(fmt.Sprintf("%d frozen readers", k), hold, hold+r.base+5*stallTick)
				r.frozenGone()
				r.stop()
			})
		})
	}
}

// TestStallPenalty: once a client is closed as slow, a client that connects
// from the same address later holds the stream not at all, for penaltyTime.
func TestStallPenalty(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newStallRig(t, hubConfig())
		pause := r.h.cfg.stallPause
		r.frozen("first", "127.0.0.2:4001")
		r.holds("first frozen reader", pause, 0)
		r.frozenGone()
		r.frozen("again", "127.0.0.2:4002")
		r.holds("a reconnect from the address", 0, r.base+stallTick)
		r.frozenGone()
		time.Sleep(penaltyTime) // the budget refills too
		r.frozen("later", "127.0.0.2:4003")
		r.holds("after penaltyTime", pause, 0)
		r.frozenGone()
		r.stop()
	})
}

// TestStallBudgetReconnects: a frozen reader that reconnects every 5 s for
// 40 s, from a new address each time, holds the stream no more than the
// stall budget allows: one stall limit, then one per budgetWindow (4.8 s in
// all instead of 24 s), without the spill, where waits are longest. With it,
// each reconnect pauses the stream --stall-pause at most, within the budget.
func TestStallBudgetReconnects(t *testing.T) {
	bothSpills(t, func(t *testing.T, r *stallRig, each time.Duration) {
		limit := r.h.cfg.stallLimit
		const every, rounds = 5 * time.Second, 8
		var held time.Duration
		for i := range rounds {
			r.frozen(fmt.Sprintf("frozen%d", i), fmt.Sprintf("127.0.1.%d:4000", i+1))
			took := r.publish(50)
			if took > each+r.base+5*stallTick {
				t.Errorf("reconnect %d held the stream %v; want %v at most", i, took, each)
			}
			held += took
			time.Sleep(every - took%every)
		}
		budget := limit + time.Duration(float64(limit)*float64(rounds*every)/float64(budgetWindow))
		if held < each || held > budget+rounds*r.base {
			t.Errorf("%d reconnects held the stream %v in all; want the stall budget, %v, at most", rounds, held, budget)
		}
		r.frozenGone()
		r.stop()
	})
}

// TestStallBudgetEstablished: a client connected before the budget was
// drawn on keeps the whole stall limit (a fast publisher never gets a reader
// that was there cut for an attacker's sake); one that connects after gets
// what the budget has refilled since. Without the spill, as above.
func TestStallBudgetEstablished(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newStallRig(t, noSpill())
		limit := r.h.cfg.stallLimit
		veteran := newFakeClientFrom(t, r.h, "veteran", "127.0.0.5:4000")
		r.others = append(r.others, veteran)
		freeze := make(chan struct{})
		go veteran.drainUntil(freeze)
		r.frozen("first", "127.0.0.2:4000")
		r.holds("first frozen reader", limit, 0)
		r.frozen("newcomer", "127.0.0.3:4000")
		r.holds("a new frozen reader with the budget spent", 0, r.base+5*stallTick)
		close(freeze)
		r.holds("a reader connected before froze", limit, 0)
		time.Sleep(budgetWindow) // full again
		r.frozen("later", "127.0.0.4:4000")
		r.holds("a minute later", limit, 0)
		r.frozenGone()
		r.stop()
	})
}

// TestStallStaggered: readers connected from the start that freeze one after
// another, not at once, pause the stream --stall-pause each, not the stall
// limit; none of them is closed as slow. (Their pauses are not taken from
// the stall budget: see docs/design.md, "What is not bounded".)
func TestStallStaggered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newStallRig(t, hubConfig())
		const k = 4 // fewer than the five healthy readers
		freeze := make([]chan struct{}, k)
		for i := range freeze {
			fc := newFakeClient(t, r.h, fmt.Sprintf("veteran%d", i))
			freeze[i] = make(chan struct{})
			go fc.drainUntil(freeze[i])
			r.others = append(r.others, fc)
		}
		r.publish(50)
		pause := r.h.cfg.stallPause
		for i := range freeze {
			close(freeze[i])
			r.holds(fmt.Sprintf("veteran%d frozen", i), pause, pause+r.base+5*stallTick)
		}
		for _, fc := range r.others {
			if why := fc.closeReason(); why != reasonNone {
				t.Errorf("%s was closed as %v; want it gone on without, kept until --write-timeout", fc.name, why)
			}
		}
		if got := r.h.m.spills.Load(); got != k {
			t.Errorf("spills = %d; want %d", got, k)
		}
		r.stop()
	})
}

// drainUntil plays a healthy writer until freeze is closed, then a frozen one.
func (fc *fakeClient) drainUntil(freeze <-chan struct{}) {
	for {
		select {
		case <-freeze:
			fc.freeze()
			return
		case b, ok := <-fc.send:
			if !ok {
				return
			}
			fc.write(b)
		}
	}
}

// TestStallBudgetSockets: on real sockets, frozen readers that connect one
// after another from new addresses, each as soon as the last was cut, while
// a publisher floods, pause the healthy readers about one stall limit in
// all, not one each. Without the spill, as the budget tests above.
func TestStallBudgetSockets(t *testing.T) {
	cfg := testConfig()
	cfg.spillBuffer = 0
	cfg.queue, cfg.maxPending = 64, 64<<10
	cfg.writeTimeout = time.Minute // so only the slow-client rule can act
	cfg.stallLimit = time.Second   // long enough for this busy process's readers
	ts := startTestServer(t, cfg)
	pub := dial(t, ts.addr, "pub")
	readers := []*testConn{pub, dial(t, ts.addr, "alice"), dial(t, ts.addr, "bob")}
	ts.waitClients(t, len(readers))

	const attackers = 6
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { floodUntil(t, pub, stop) })
	paused := make([]time.Duration, len(readers))
	for i, r := range readers {
		wg.Go(func() { paused[i] = readPaused(t, r) })
	}
	for i := range attackers {
		dialUnreadFrom(t, ts.addr, fmt.Sprintf("127.0.2.%d", i+1))
		waitFor(t, 10*time.Second, func() error {
			if got := ts.closes(reasonSlowClient); got != uint64(i+1) {
				return fmt.Errorf("closes{slow_client} = %d; want %d", got, i+1)
			}
			return nil
		})
	}
	close(stop)
	wg.Wait()
	for i, r := range readers {
		t.Logf("%s: paused %v in all", r.name, paused[i])
		if paused[i] > cfg.stallLimit+cfg.stallLimit/2 {
			t.Errorf("%s: %d frozen readers paused the stream %v in all; want about one stall limit (%v)", r.name, attackers, paused[i], cfg.stallLimit)
		}
	}
	ts.waitClients(t, len(readers))
}

// floodUntil has c publish lines as fast as the hub takes them until stop
// is closed (or a bound on the lines is reached), then the line "end".
func floodUntil(t *testing.T, c *testConn, stop <-chan struct{}) {
	var chunk strings.Builder
	for i := range 100 {
		chunk.WriteString(line(c.name, i, 512))
	}
	c.SetWriteDeadline(time.Now().Add(time.Minute))
	for range 20000 { // 1 GB at most
		select {
		case <-stop:
			c.send(t, "end\n")
			return
		default:
		}
		if _, err := c.Write([]byte(chunk.String())); err != nil {
			t.Errorf("%s: publish: %v", c.name, err)
			return
		}
	}
	t.Errorf("%s: the flood reached its bound before the attack ended", c.name)
}

// readPaused reads lines from c until "end" and returns the time spent in
// waits for a line longer than 100ms: how long the stream paused for c.
func readPaused(t *testing.T, c *testConn) time.Duration {
	var paused time.Duration
	last := time.Now()
	for {
		c.SetReadDeadline(time.Now().Add(time.Minute))
		l, err := c.r.ReadString('\n')
		if err != nil {
			t.Errorf("%s: read: %v", c.name, err)
			return paused
		}
		now := time.Now()
		if gap := now.Sub(last); gap > 100*time.Millisecond {
			paused += gap
		}
		last = now
		if l == "end\n" {
			return paused
		}
	}
}
