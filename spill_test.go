package main

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// nap plays a writer whose peer stops reading for d at its first batch (a
// write blocked that long), then keeps up again.
func (fc *fakeClient) nap(d time.Duration) {
	b, ok := <-fc.send
	if !ok {
		return
	}
	fc.writingSince.Store(time.Now().UnixNano())
	time.Sleep(d)
	fc.writingSince.Store(0)
	fc.write(b)
	fc.drain(time.Millisecond, true)
}

// napper registers a reader that naps for a second less than the stall
// limit once the stream reaches it, and checks that the stream paused
// --stall-pause for it.
func (r *stallRig) napper() *fakeClient {
	r.t.Helper()
	fc := newFakeClient(r.t, r.h, "napper")
	r.others = append(r.others, fc)
	go fc.nap(r.h.cfg.stallLimit - time.Second)
	pause := r.h.cfg.stallPause
	r.holds("a napping reader", pause, pause+r.base+5*stallTick)
	return fc
}

// gotAll waits until fc has received what the healthy readers did since it
// connected, after the rig's first 50 lines, and checks it is that, in order.
func (r *stallRig) gotAll(fc *fakeClient) {
	r.t.Helper()
	want := r.healthy[1].received()[50:]
	if r.h.cfg.excludeSender {
		want = slices.DeleteFunc(want, func(s string) bool { return strings.HasPrefix(s, fc.name) })
	}
	settle(r.t, len(want), fc)
	if got := fc.received(); !slices.Equal(got, want) {
		r.t.Errorf("%s received %d messages, %q...; want the %d the others did, in order", fc.name, len(got), got[:min(5, len(got))], len(want))
	}
}

// TestSpillResumes: a reader that stops for less than the stall limit while
// the stream goes on pauses it only --stall-pause, and then gets everything
// it missed, in order, with or without --exclude-sender (it publishes while
// it naps); the spill is empty afterwards.
func TestSpillResumes(t *testing.T) {
	for _, exclude := range []bool{false, true} {
		t.Run(fmt.Sprintf("exclude-sender=%v", exclude), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := hubConfig()
				cfg.excludeSender = exclude
				r := newStallRig(t, cfg)
				start := time.Now()
				napper := r.napper()
				for i := range 10 {
					napper.publish(fmt.Sprintf("napper%d\n", i))
					r.holds("a napping reader, spilled", 0, r.base+5*stallTick)
				}
				r.gotAll(napper)
				if took, nap := time.Since(start), r.h.cfg.stallLimit-time.Second; took < nap {
					t.Errorf("napper had everything after %v; want after its nap, %v", took, nap)
				}
				if got := r.h.m.spills.Load(); got != 1 {
					t.Errorf("spills = %d; want 1", got)
				}
				if got := r.h.m.spillBytes.Load(); got != 0 {
					t.Errorf("spill holds %d bytes after napper caught up; want 0", got)
				}
				if got := r.h.m.clients.Load(); got != 6 {
					t.Errorf("clients = %d; want 6, napper still connected", got)
				}
				r.stop()
			})
		})
	}
}

// TestSpillFull: the spill holds no more than --spill-buffer. Once a frozen
// reader's spill is full the hub waits on it again, up to the stall limit in
// all, and so slows intake as it does without the spill.
func TestSpillFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := hubConfig()
		cfg.spillBuffer = 20 * (msgCost + 4) // about 20 of the rig's lines
		r := newStallRig(t, cfg)
		r.frozen("frozen", "")
		var most int64
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				most = max(most, r.h.m.spillBytes.Load())
				select {
				case <-done:
					return
				case <-time.After(time.Millisecond):
				}
			}
		})
		limit := r.h.cfg.stallLimit
		r.holds("a frozen reader with the spill full", limit, limit+r.base+5*stallTick)
		close(done)
		wg.Wait()
		if most == 0 || most > int64(r.h.cfg.spillBuffer) {
			t.Errorf("the spill held up to %d bytes; want more than 0, at most --spill-buffer (%d)", most, r.h.cfg.spillBuffer)
		}
		r.frozenGone()
		r.stop()
	})
}

// TestSpillShutdown: a spilled reader still napping when the server shuts
// down gets everything it missed before its queue is closed.
func TestSpillShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newStallRig(t, hubConfig())
		napper := r.napper()
		r.stop()
		r.gotAll(napper) // its writer drains what the hub queued before it exited
		if why := napper.closeReason(); why == reasonSlowClient {
			t.Errorf("napper was closed as %v; want it kept", why)
		}
	})
}

// TestSpillSockets: on real sockets, under a steady publisher, a reader that
// stops reading for 2 s and one that never reads pause the others about
// --stall-pause in all, not 2 or 3 s; the first then reads every line, in
// order, and the second is closed by --write-timeout.
func TestSpillSockets(t *testing.T) {
	cfg := testConfig()
	cfg.queue, cfg.maxPending = 64, 64<<10
	cfg.writeTimeout = 4 * time.Second // longer than the nap
	ts := startTestServer(t, cfg)
	pub, alice, bob := dial(t, ts.addr, "pub"), dial(t, ts.addr, "alice"), dial(t, ts.addr, "bob")
	napper := frozen(t, ts.addr) // reads nothing, for now
	dialUnread(t, ts.addr)
	ts.waitClients(t, 5)

	const n, size, every = 6000, 512, 10 * time.Millisecond // 1 MB/s for 3 s
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; i < n; i += 20 {
			var chunk strings.Builder
			for j := i; j < i+20; j++ {
				chunk.WriteString(line("pub", j, size))
			}
			pub.send(t, chunk.String())
			time.Sleep(every)
		}
	})
	for _, r := range []*testConn{pub, alice, bob} {
		wg.Go(func() {
			if longest := readAll(t, r, "pub", n, size); longest > cfg.stallPause+time.Second {
				t.Errorf("%s: the stream paused %v; want about --stall-pause (%v)", r.name, longest, cfg.stallPause)
			}
		})
	}
	wg.Go(func() {
		time.Sleep(2 * time.Second)
		readAll(t, napper, "pub", n, size)
	})
	wg.Wait()
	waitFor(t, 5*time.Second, func() error {
		if got := ts.closes(reasonWriteTimeout); got != 1 {
			return fmt.Errorf("closes{write_timeout} = %d; want 1, the reader that never read", got)
		}
		return nil
	})
	if got := ts.closes(reasonSlowClient); got != 0 {
		t.Errorf("closes{slow_client} = %d; want 0", got)
	}
	ts.waitClients(t, 4)
	if got := ts.m.spillBytes.Load(); got != 0 {
		t.Errorf("spill holds %d bytes once the frozen reader is gone; want 0", got)
	}
	if got := ts.m.spills.Load(); got != 2 {
		t.Errorf("spills = %d; want 2", got)
	}
}

// TestSpillLeaves: a spilled reader whose reader side leaves (a half-close;
// it still reads) gets everything it missed, and only then is removed.
func TestSpillLeaves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newStallRig(t, hubConfig())
		napper := r.napper()
		r.h.unregister(napper.client)
		synctest.Wait()
		if got := r.h.m.clients.Load(); got != 6 {
			t.Errorf("clients = %d right after napper's reader left; want 6, napper kept until it has what it missed", got)
		}
		r.gotAll(napper)
		if got := r.h.m.clients.Load(); got != 5 {
			t.Errorf("clients = %d once napper caught up; want 5, napper removed", got)
		}
		r.stop()
	})
}
