package main

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"
)

// A fakeClient is a client with no socket: a test goroutine plays its
// writer, taking batches off send as writeLoop would.
type fakeClient struct {
	*client
	name    string
	mu      sync.Mutex
	got     []string // messages received, in order
	batches int      // batches received
}

// newFakeClient registers a client named name with h.
func newFakeClient(t *testing.T, h *hub, name string) *fakeClient {
	return newFakeClientFrom(t, h, name, "")
}

// newFakeClientFrom registers a client named name with h, connected from
// remote ("host:port"; empty for none, as a pipe has).
func newFakeClientFrom(t *testing.T, h *hub, name, remote string) *fakeClient {
	near, far := net.Pipe()
	t.Cleanup(func() { near.Close(); far.Close() })
	var conn net.Conn = near
	if remote != "" {
		conn = addrConn{near, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(remote))}
	}
	fc := &fakeClient{client: newClient(0, conn, h, zerolog.Nop()), name: name}
	if !h.register(fc.client) {
		t.Fatalf("%s: hub exited", name)
	}
	return fc
}

// An addrConn is a pipe that claims a TCP peer address.
type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// drain plays the writer until send is closed: each batch takes delay, and
// with stuck set, the delay counts as a write blocked on the socket.
func (fc *fakeClient) drain(delay time.Duration, stuck bool) {
	for b := range fc.send {
		if stuck {
			fc.writingSince.Store(time.Now().UnixNano())
		}
		time.Sleep(delay)
		fc.writingSince.Store(0)
		fc.write(b)
	}
}

// write records b as written and takes it off fc's queue.
func (fc *fakeClient) write(b *batch) {
	fc.mu.Lock()
	fc.batches++
	for _, m := range b.msgs {
		if !fc.hub.cfg.excludeSender || m.from != fc.client {
			fc.got = append(fc.got, splitLines(m.data)...)
		}
	}
	fc.mu.Unlock()
	fc.dequeue(fc.share(b.msgs))
}

// freeze plays a writer blocked in a write that never returns, as the
// server sees it: after --write-timeout its watchdog closes the connection,
// the reader leaves, and the writer discards what it is sent until the hub
// removes it. It returns early if the hub exits.
func (fc *fakeClient) freeze() {
	fc.writingSince.Store(time.Now().UnixNano())
	select {
	case <-time.After(fc.hub.cfg.writeTimeout):
	case <-fc.hub.done:
		return
	}
	fc.close(reasonWriteTimeout)
	fc.writingSince.Store(0)
	go fc.hub.unregister(fc.client)
	for b := range fc.send {
		fc.dequeue(fc.share(b.msgs))
	}
}

// received returns what fc has received so far.
func (fc *fakeClient) received() []string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return append([]string(nil), fc.got...)
}

// publish hands the hub one line from fc, as fc's reader would.
func (fc *fakeClient) publish(s string) {
	fc.hub.publish <- message{from: fc.client, data: []byte(s), count: strings.Count(s, "\n")}
}

// publishMany publishes the lines "m0\n" to "m<n-1>\n" from fc, one at a
// time, and returns them.
func (fc *fakeClient) publishMany(n int) []string {
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprintf("m%d\n", i)
		fc.publish(want[i])
	}
	return want
}

// settle waits, in the bubble's fake time, until every client in fcs has
// received n messages or has been removed, and returns how long that took.
func settle(t *testing.T, n int, fcs ...*fakeClient) time.Duration {
	t.Helper()
	start := time.Now()
	for range 6000 { // a minute of fake time
		done := true
		for _, fc := range fcs {
			done = done && len(fc.received()) >= n
		}
		if done {
			synctest.Wait() // let the hub finish what it is doing
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("clients did not receive %d messages within a minute", n)
	return 0
}

// splitLines splits data after each '\n'.
func splitLines(data []byte) []string {
	lines := strings.SplitAfter(string(data), "\n")
	return lines[:len(lines)-1] // the empty string after the last '\n'

}

// startHub runs a hub for cfg; stopHub ends it.
func startHub(cfg config) *hub {
	h := newHub(cfg, zerolog.Nop(), new(metrics))
	go h.run()
	return h
}

// stopHub stops h the way Shutdown does, makes every reader leave, and
// waits for the hub to exit.
func stopHub(h *hub, clients ...*fakeClient) {
	h.shutdown()
	for _, fc := range clients {
		h.unregister(fc.client)
	}
	<-h.done
}

func hubConfig() config {
	cfg := defaultConfig()
	cfg.queue, cfg.maxPending = 8, 1<<20
	return cfg
}

func TestHubFanoutOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHub(hubConfig())
		alice, bob, carol := newFakeClient(t, h, "alice"), newFakeClient(t, h, "bob"), newFakeClient(t, h, "carol")
		for _, fc := range []*fakeClient{alice, bob, carol} {
			go fc.drain(0, false)
		}
		var want []string
		for i := range 100 {
			from := []*fakeClient{alice, bob, carol}[i%3]
			l := fmt.Sprintf("%s %d\n", from.name, i)
			from.publish(l)
			want = append(want, l)
		}
		settle(t, len(want), alice, bob, carol)
		for _, fc := range []*fakeClient{alice, bob, carol} {
			if diff := cmp.Diff(want, fc.received()); diff != "" {
				t.Errorf("%s received (-want +got):\n%s", fc.name, diff)
			}
			if q, b := fc.pendingMsgs.Load(), fc.pendingBytes.Load(); q != 0 || b != 0 {
				t.Errorf("%s: pending = %d messages, %d bytes after draining; want 0, 0", fc.name, q, b)
			}
		}
		stopHub(h, alice, bob, carol)
	})
}

func TestHubExcludeSender(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := hubConfig()
		cfg.excludeSender = true
		h := startHub(cfg)
		alice, bob := newFakeClient(t, h, "alice"), newFakeClient(t, h, "bob")
		go alice.drain(0, false)
		go bob.drain(0, false)
		alice.publish("a1\n")
		bob.publish("b1\n")
		alice.publish("a2\n")
		settle(t, 1, alice)
		settle(t, 2, bob)
		if diff := cmp.Diff([]string{"b1\n"}, alice.received()); diff != "" {
			t.Errorf("alice received (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"a1\n", "a2\n"}, bob.received()); diff != "" {
			t.Errorf("bob received (-want +got):\n%s", diff)
		}
		for _, fc := range []*fakeClient{alice, bob} {
			if q, b := fc.pendingMsgs.Load(), fc.pendingBytes.Load(); q != 0 || b != 0 {
				t.Errorf("%s: pending = %d messages, %d bytes; want 0, 0: the hub must not count what the writer skips", fc.name, q, b)
			}
		}
		stopHub(h, alice, bob)
		time.Sleep(5 * time.Millisecond) // bob's writer returns
	})
}

// TestHubEveryoneBehind: when every client is slow, because publishers
// outrun all writers, the hub waits, however long that takes, and nobody is
// disconnected or loses anything.
func TestHubEveryoneBehind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := hubConfig()
		cfg.stallLimit = 500 * time.Millisecond // any limit will do; this keeps the test within settle's minute
		h := startHub(cfg)
		clients := []*fakeClient{newFakeClient(t, h, "alice"), newFakeClient(t, h, "bob"), newFakeClient(t, h, "carol")}
		for _, fc := range clients {
			go fc.drain(2*cfg.stallLimit, true) // each write blocks longer than the stall limit
		}
		want := clients[0].publishMany(50)
		settle(t, len(want), clients...)
		for _, fc := range clients {
			if diff := cmp.Diff(want, fc.received()); diff != "" {
				t.Errorf("%s received (-want +got):\n%s", fc.name, diff)
			}
		}
		if got := h.m.clients.Load(); got != 3 {
			t.Errorf("clients = %d; want 3, nobody disconnected", got)
		}
		stopHub(h, clients...)
	})
}

// TestHubFrozenClient: without the spill (or with it full), a client whose
// write never returns holds the stream for the stall limit once; then it is
// disconnected, or, under --slow=drop, skipped without further stalls.
func TestHubFrozenClient(t *testing.T) {
	for _, policy := range []slowPolicy{slowDisconnect, slowDrop} {
		t.Run(policy.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := noSpill()
				cfg.slow = policy
				h := startHub(cfg)
				alice, bob, slow := newFakeClient(t, h, "alice"), newFakeClient(t, h, "bob"), newFakeClient(t, h, "slow")
				go alice.drain(time.Millisecond, true)
				go bob.drain(time.Millisecond, true)
				go slow.freeze()

				start := time.Now()
				want := alice.publishMany(200)
				settle(t, len(want), alice, bob)
				elapsed := time.Since(start)
				for _, fc := range []*fakeClient{alice, bob} {
					if diff := cmp.Diff(want, fc.received()); diff != "" {
						t.Errorf("%s received (-want +got):\n%s", fc.name, diff)
					}
				}
				// 200 messages take the others 200ms of writes at most; the
				// one stall on slow adds the stall limit, and never more.
				if limit := defaultStallLimit; cfg.stallLimit != limit || elapsed < limit || elapsed > limit+time.Second {
					t.Errorf("publishing took %v; want about the stall limit (%v) plus the writes", elapsed, limit)
				}
				switch policy {
				case slowDisconnect:
					if got := h.m.clients.Load(); got != 2 {
						t.Errorf("clients = %d; want 2, slow disconnected", got)
					}
					if slow.index != -1 {
						t.Errorf("slow is still registered")
					}
					stopHub(h, alice, bob, slow)
				case slowDrop:
					queued := slow.pendingMsgs.Load()
					if got := slow.dropped.Load(); got != 200-uint64(queued) {
						t.Errorf("slow: dropped %d; want %d, all it could not queue", got, 200-queued)
					}
					if got := h.m.clients.Load(); got != 3 {
						t.Errorf("clients = %d; want 3, slow still connected", got)
					}
					stopHub(h, alice, bob, slow)
				}
			})
		})
	}
}

// TestHubStarvedWriterNotSlow: a writer that is not blocked in a write (it
// waits for a CPU, or its goroutine is slow to run) is never judged slow,
// however long the hub waits for it.
func TestHubStarvedWriterNotSlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHub(hubConfig())
		alice, starved := newFakeClient(t, h, "alice"), newFakeClient(t, h, "starved")
		go alice.drain(0, false)
		go starved.drain(2*time.Second, false)
		want := alice.publishMany(40)
		settle(t, len(want), alice, starved)
		for _, fc := range []*fakeClient{alice, starved} {
			if diff := cmp.Diff(want, fc.received()); diff != "" {
				t.Errorf("%s received (-want +got):\n%s", fc.name, diff)
			}
		}
		if got := h.m.clients.Load(); got != 2 {
			t.Errorf("clients = %d; want 2", got)
		}
		stopHub(h, alice, starved)
	})
}

// TestHubLeaveAfterPublish: a reader's last messages reach everyone, the
// reader's own client included, before the hub removes it.
func TestHubLeaveAfterPublish(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHub(hubConfig())
		alice, bob := newFakeClient(t, h, "alice"), newFakeClient(t, h, "bob")
		go alice.drain(0, false)
		go bob.drain(0, false)
		want := []string{"last 1\n", "last 2\n", "last 3\n"}
		for _, l := range want {
			alice.publish(l)
		}
		h.unregister(alice.client)
		settle(t, len(want), alice, bob)
		for _, fc := range []*fakeClient{alice, bob} {
			if diff := cmp.Diff(want, fc.received()); diff != "" {
				t.Errorf("%s received (-want +got):\n%s", fc.name, diff)
			}
		}
		if alice.index != -1 {
			t.Errorf("alice still registered after leaving")
		}
		stopHub(h, bob)
	})
}

// TestHubDrain: after stop, the hub keeps every client registered until
// every reader has left, so what a reader hands over late reaches everyone;
// then it closes every send channel.
func TestHubDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHub(hubConfig())
		alice, bob := newFakeClient(t, h, "alice"), newFakeClient(t, h, "bob")
		go alice.drain(0, false)
		go bob.drain(0, false)
		h.shutdown()
		h.unregister(bob.client) // bob's reader stops first
		alice.publish("late\n")  // alice's reader hands over its last line
		h.unregister(alice.client)
		<-h.done
		synctest.Wait()
		for _, fc := range []*fakeClient{alice, bob} {
			if diff := cmp.Diff([]string{"late\n"}, fc.received()); diff != "" {
				t.Errorf("%s received (-want +got):\n%s", fc.name, diff)
			}
		}
		if got := h.m.clients.Load(); got != 0 {
			t.Errorf("clients = %d after the hub exited; want 0", got)
		}
	})
}

// TestHubSharesBytes: every receiver gets the very bytes the reader handed
// over; the hub copies nothing per client.
func TestHubSharesBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startHub(hubConfig())
		alice, bob := newFakeClient(t, h, "alice"), newFakeClient(t, h, "bob")
		data := []byte("shared\n")
		h.publish <- message{from: alice.client, data: data, count: 1}
		synctest.Wait()
		for _, fc := range []*fakeClient{alice, bob} {
			b := <-fc.send
			if got := b.msgs[0].data; len(b.msgs) != 1 || &got[0] != &data[0] {
				t.Errorf("%s got %d messages, the first at %p; want 1, the reader's slice at %p", fc.name, len(b.msgs), &got[0], &data[0])
			}
			fc.dequeue(fc.share(b.msgs))
		}
		stopHub(h, alice, bob)
		time.Sleep(5 * time.Millisecond) // bob's writer returns
	})
}

// receivedBatches returns how many batches fc has received so far.
func (fc *fakeClient) receivedBatches() int {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.batches
}

// TestHubBatching: the hub fans a message out at once when the writers have
// written the previous fan-out, and otherwise holds what arrives until they
// have and --coalesce has passed since that fan-out, the batch is full, or
// the hold has lasted --coalesce; a writer that was behind before the last
// fan-out holds nobody. Held messages are fanned out
// before a client joins or leaves and at shutdown, so a joiner gets nothing
// read before it joined and a leaver its own last messages. alice's writer is
// instant, so her batches show the hub's fan-outs; bob's takes 1ms a write.
func TestHubBatching(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := hubConfig()
		cfg.coalesce = 10 * time.Millisecond
		cfg.queue = 64 // batches of up to 16 messages
		h := startHub(cfg)
		alice, bob := newFakeClient(t, h, "alice"), newFakeClient(t, h, "bob")
		go alice.drain(0, false)
		go bob.drain(time.Millisecond, false)
		check := func(step string, fc *fakeClient, wantMsgs, wantBatches int) {
			t.Helper()
			synctest.Wait()
			if got, b := len(fc.received()), fc.receivedBatches(); got != wantMsgs || b != wantBatches {
				t.Fatalf("%s: %s has %d messages in %d batches; want %d in %d", step, fc.name, got, b, wantMsgs, wantBatches)
			}
		}
		elapsed := func(step string, start time.Time, want time.Duration) {
			t.Helper()
			if d := time.Since(start); d != want {
				t.Errorf("%s: went out after %v; want %v", step, d, want)
			}
		}

		start := time.Now()
		alice.publish("m0\n")
		check("idle writers", alice, 1, 1)
		elapsed("idle writers", start, 0)
		for _, l := range []string{"m1\n", "m2\n", "m3\n"} {
			alice.publish(l) // bob is still writing m0
		}
		check("bob busy", alice, 1, 1)
		time.Sleep(time.Millisecond)
		check("bob done, paced", alice, 1, 1) // at most one fan-out per --coalesce while writers are busy
		time.Sleep(cfg.coalesce - time.Millisecond)
		check("pace", alice, 4, 2)
		elapsed("pace", start, cfg.coalesce)

		time.Sleep(5 * time.Millisecond) // everyone idle
		carol := newFakeClient(t, h, "carol")
		go carol.freeze() // caught up now, but her next write never ends
		alice.publish("m4\n")
		check("carol joins", alice, 5, 3)
		start = time.Now()
		alice.publish("m5\n") // held: bob and carol are writing m4
		time.Sleep(time.Millisecond)
		check("carol stuck", alice, 5, 3)
		time.Sleep(cfg.coalesce - time.Millisecond)
		check("coalesce bound", alice, 6, 4)
		elapsed("coalesce bound", start, cfg.coalesce)
		time.Sleep(5 * time.Millisecond) // bob is done with m5; carol, behind before m5, is not
		start = time.Now()
		alice.publish("m6\n")
		check("carol does not hold anyone", alice, 7, 5)
		elapsed("carol does not hold anyone", start, 0)

		for i := range 16 { // bob is writing m6
			alice.publish(fmt.Sprintf("f%d\n", i))
		}
		check("full batch", alice, 23, 6)

		time.Sleep(5 * time.Millisecond)
		alice.publish("m7\n") // out at once
		synctest.Wait()
		alice.publish("m8\n") // held
		dave := newFakeClient(t, h, "dave")
		go dave.drain(0, false)
		check("join", alice, 25, 8)
		check("join", dave, 0, 0)

		time.Sleep(5 * time.Millisecond)
		alice.publish("m9\n") // out at once
		synctest.Wait()
		alice.publish("m10\n") // held
		h.unregister(alice.client)
		check("leave", alice, 27, 10)
		check("leave", dave, 2, 2)

		time.Sleep(5 * time.Millisecond)
		bob.publish("m11\n") // out at once
		synctest.Wait()
		bob.publish("m12\n") // held
		stopHub(h, bob, carol, dave)
		time.Sleep(5 * time.Millisecond) // the writers, bob's too, take the last batch and return
		if got, want := dave.received(), "m12\n"; got[len(got)-1] != want {
			t.Errorf("after shutdown dave's last message is %q; want %q", got[len(got)-1], want)
		}
	})
}

// TestHubCoalesceOff: with --coalesce 0 every read is fanned out at once, in
// a batch of its own, even while a writer (bob's) is busy.
func TestHubCoalesceOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := hubConfig()
		cfg.coalesce = 0
		h := startHub(cfg)
		alice, bob := newFakeClient(t, h, "alice"), newFakeClient(t, h, "bob")
		go alice.drain(0, false)
		go bob.drain(time.Millisecond, false)
		for i := range 5 {
			alice.publish(fmt.Sprintf("m%d\n", i))
			synctest.Wait()
			if got, b := len(alice.received()), alice.receivedBatches(); got != i+1 || b != i+1 {
				t.Fatalf("after message %d alice has %d messages in %d batches; want %d in %d", i, got, b, i+1, i+1)
			}
		}
		stopHub(h, alice, bob)
		time.Sleep(5 * time.Millisecond) // bob's writer returns
	})
}

// TestHubExcludeSenderPending: with --exclude-sender, the bytes of a
// client's own messages in a queued batch count toward its --max-pending,
// since the batch keeps them alive.
func TestHubExcludeSenderPending(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := noSpill() // alice's queue, not the spill, is what is counted here
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
		time.Sleep(2 * cfg.stallLimit) // the hub's wait on alice ends
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
