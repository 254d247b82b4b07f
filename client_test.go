package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestClientBroadcast(t *testing.T) {
	ts := startTestServer(t, testConfig())
	alice, bob, carol := dial(t, ts.addr, "alice"), dial(t, ts.addr, "bob"), dial(t, ts.addr, "carol")
	ts.waitClients(t, 3)

	alice.send(t, "hello\r\n") // CRLF is kept: messages are byte-exact
	for _, c := range []*testConn{alice, bob, carol} {
		expectLine(t, c, "hello\r\n")
	}
	bob.send(t, "\x00\xffbinary\tbytes\n")
	for _, c := range []*testConn{alice, bob, carol} {
		expectLine(t, c, "\x00\xffbinary\tbytes\n")
	}
	if got := ts.m.messagesReceived.Load(); got != 2 {
		t.Errorf("messages received = %d; want 2", got)
	}
	waitFor(t, 5*time.Second, func() error {
		if got := ts.m.messagesDelivered.Load(); got != 6 {
			return fmt.Errorf("messages delivered = %d; want 6", got)
		}
		return nil
	})
}

func TestClientExcludeSender(t *testing.T) {
	cfg := testConfig()
	cfg.excludeSender = true
	ts := startTestServer(t, cfg)
	alice, bob := dial(t, ts.addr, "alice"), dial(t, ts.addr, "bob")
	ts.waitClients(t, 2)

	alice.send(t, "from alice\n")
	expectLine(t, bob, "from alice\n")
	bob.send(t, "from bob\n")
	expectLine(t, alice, "from bob\n") // alice's own line never came first
	expectNothing(t, bob, 100*time.Millisecond)
}

func TestClientFinalLineAtEOF(t *testing.T) {
	ts := startTestServer(t, testConfig())
	alice, bob := dial(t, ts.addr, "alice"), dial(t, ts.addr, "bob")
	ts.waitClients(t, 2)

	alice.send(t, "one\ntail")
	alice.Conn.(*net.TCPConn).CloseWrite()
	// README: a final line without '\n' at EOF is delivered with '\n'
	// appended, and a client that half-closes still gets what was queued
	// for it before it left, its own lines included.
	for _, c := range []*testConn{alice, bob} {
		expectLine(t, c, "one\n")
		expectLine(t, c, "tail\n")
	}
	expectClosed(t, alice)
	ts.waitClients(t, 1)
	waitFor(t, 5*time.Second, func() error {
		if got := ts.closes(reasonEOF); got != 1 {
			return fmt.Errorf("closes{eof} = %d; want 1", got)
		}
		return nil
	})
}

func TestClientTotalOrder(t *testing.T) {
	ts := startTestServer(t, testConfig())
	names := []string{"alice", "bob", "carol"}
	var conns []*testConn
	for _, name := range names {
		conns = append(conns, dial(t, ts.addr, name))
	}
	ts.waitClients(t, len(names))

	const n = 500
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			var b strings.Builder
			for i := range n {
				b.WriteString(line(c.name, i, 40))
			}
			c.SetWriteDeadline(time.Now().Add(ioTimeout))
			// One write holding many lines: the server reads them in
			// chunks, yet delivers whole lines, in order.
			io.WriteString(c, b.String())
		})
	}
	got := make([][]string, len(conns))
	for i, c := range conns {
		wg.Go(func() {
			for range n * len(names) {
				c.SetReadDeadline(time.Now().Add(ioTimeout))
				l, err := c.r.ReadString('\n')
				if err != nil {
					t.Errorf("%s: read: %v", c.name, err)
					return
				}
				got[i] = append(got[i], l)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	// One total order: every receiver saw the same sequence.
	for i := 1; i < len(got); i++ {
		if strings.Join(got[i], "") != strings.Join(got[0], "") {
			t.Fatalf("%s and %s saw different sequences", names[0], names[i])
		}
	}
	// Per-sender order kept, and no line split or interleaved.
	next := map[string]int{}
	for _, l := range got[0] {
		name, _, _ := strings.Cut(l, " ")
		if want := line(name, next[name], 40); l != want {
			t.Fatalf("got line %q; want %q", l, want)
		}
		next[name]++
	}
}

func TestClientLen32(t *testing.T) {
	cfg := testConfig()
	cfg.framing = framingLen32
	cfg.maxMessage = 1000
	ts := startTestServer(t, cfg)
	alice, bob := dial(t, ts.addr, "alice"), dial(t, ts.addr, "bob")
	ts.waitClients(t, 2)

	frame := func(payload string) string {
		return string(binary.BigEndian.AppendUint32(nil, uint32(len(payload)))) + payload
	}
	// A zero-length frame is a message; a payload of exactly --max-message
	// is accepted; payloads are binary-safe.
	want := frame("") + frame(strings.Repeat("m", 1000)) + frame("a\nb\x00c")
	alice.send(t, want)
	for _, c := range []*testConn{alice, bob} {
		got := make([]byte, len(want))
		c.SetReadDeadline(time.Now().Add(ioTimeout))
		if _, err := io.ReadFull(c.r, got); err != nil {
			t.Fatalf("%s: read: %v", c.name, err)
		}
		if string(got) != want {
			t.Fatalf("%s: got %q; want %q", c.name, got, want)
		}
	}
	if got := ts.m.messagesReceived.Load(); got != 3 {
		t.Errorf("messages received = %d; want 3", got)
	}
}

func TestClientRaw(t *testing.T) {
	cfg := testConfig()
	cfg.framing = framingRaw
	ts := startTestServer(t, cfg)
	alice, bob := dial(t, ts.addr, "alice"), dial(t, ts.addr, "bob")
	ts.waitClients(t, 2)

	alice.send(t, "no newline, any bytes \x00")
	got := make([]byte, 23)
	bob.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := io.ReadFull(bob.r, got); err != nil || string(got) != "no newline, any bytes \x00" {
		t.Fatalf("bob: read %q, %v; want %q", got, err, "no newline, any bytes \x00")
	}
}

func TestClientMessageTooLong(t *testing.T) {
	for _, tc := range []struct {
		name    string
		framing framing
		good    string // a message at the limit: delivered
		tooLong string // over the limit: never delivered
		notice  string
	}{{
		name:    "line",
		framing: framingLine,
		good:    strings.Repeat("g", 99) + "\n",
		tooLong: strings.Repeat("x", 100) + "\n",
		notice:  "echohub: message too long (max 100 bytes); closing\n",
	}, {
		name:    "len32",
		framing: framingLen32,
		good:    "\x00\x00\x00\x64" + strings.Repeat("g", 100),
		tooLong: "\x00\x00\x00\x65" + strings.Repeat("x", 101),
		notice:  "\x00\x00\x00\x32echohub: message too long (max 100 bytes); closing",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.framing, cfg.maxMessage = tc.framing, 100
			ts := startTestServer(t, cfg)
			mallory, bob, carol := dial(t, ts.addr, "mallory"), dial(t, ts.addr, "bob"), dial(t, ts.addr, "carol")
			ts.waitClients(t, 3)

			read := func(c *testConn, want string) {
				t.Helper()
				got := make([]byte, len(want))
				c.SetReadDeadline(time.Now().Add(ioTimeout))
				if _, err := io.ReadFull(c.r, got); err != nil || string(got) != want {
					t.Fatalf("%s: read %q, %v; want %q", c.name, got, err, want)
				}
			}
			mallory.send(t, tc.good+tc.tooLong+tc.good)
			read(bob, tc.good)
			// mallory gets what was queued for her, then one notice, then EOF.
			read(mallory, tc.good)
			read(mallory, tc.notice)
			expectClosed(t, mallory)
			ts.waitClients(t, 2)
			expectNothing(t, bob, 100*time.Millisecond) // no byte of the long message, nor what followed

			carol.send(t, tc.good) // the others are unaffected
			read(bob, tc.good)
			read(carol, tc.good)
			waitFor(t, 5*time.Second, func() error {
				if got := ts.closes(reasonMessageTooLong); got != 1 {
					return fmt.Errorf("closes{message_too_long} = %d; want 1", got)
				}
				return nil
			})
			waitFor(t, 5*time.Second, func() error { // the counter goes up just before the log line
				if !ts.logs.has(`"level":"warn"`, `"reason":"message_too_long"`, `"client closed"`) {
					return errors.New("no warn log line for the close")
				}
				return nil
			})
		})
	}
}

func TestClientEOFAndReset(t *testing.T) {
	ts := startTestServer(t, testConfig())
	alice, bob, carol := dial(t, ts.addr, "alice"), dial(t, ts.addr, "bob"), dial(t, ts.addr, "carol")
	ts.waitClients(t, 3)

	alice.Close()
	ts.waitClients(t, 2)
	bob.Conn.(*net.TCPConn).SetLinger(0) // close with RST
	bob.Close()
	ts.waitClients(t, 1)

	carol.send(t, "still here\n")
	expectLine(t, carol, "still here\n")
	waitFor(t, 5*time.Second, func() error {
		if eof, reset := ts.closes(reasonEOF), ts.closes(reasonReadError); eof+reset != 2 || eof < 1 {
			return fmt.Errorf("closes{eof} = %d, closes{read_error} = %d; want 2 in all, alice's eof among them", eof, reset)
		}
		return nil
	})
}

// publishLines writes n lines of size bytes from c in one go, as fast as the
// server accepts them.
func publishLines(t *testing.T, c *testConn, n, size int) {
	t.Helper()
	var b strings.Builder
	for i := range n {
		b.WriteString(line(c.name, i, size))
	}
	c.SetWriteDeadline(time.Now().Add(time.Minute))
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Errorf("%s: publish: %v", c.name, err)
	}
}

// readAll reads n lines of size bytes from c, sent by from, and checks that
// they are whole and in order. It reads in large chunks, so that a hundred
// readers cost the test little CPU, and returns the longest wait for one read
// (the longest stall seen).
func readAll(t *testing.T, c *testConn, from string, n, size int) time.Duration {
	t.Helper()
	var want strings.Builder
	for i := range n {
		want.WriteString(line(from, i, size))
	}
	var longest time.Duration
	last, got, buf := time.Now(), 0, make([]byte, 64<<10)
	for got < want.Len() {
		c.SetReadDeadline(time.Now().Add(time.Minute))
		k, err := c.r.Read(buf[:min(len(buf), want.Len()-got)])
		if k > 0 && string(buf[:k]) != want.String()[got:got+k] {
			t.Errorf("%s: bytes %d to %d differ from the lines %s sent", c.name, got, got+k, from)
			return longest
		}
		got += k
		if err != nil {
			t.Errorf("%s: read after %d of %d lines: %v", c.name, got/size, n, err)
			return longest
		}
		now := time.Now()
		longest = max(longest, now.Sub(last))
		last = now
	}
	return longest
}

// frozenFloodLines lines of frozenFloodSize bytes make 1 MB: past a frozen
// reader's socket buffers and its queue.
const frozenFloodLines, frozenFloodSize = 2000, 512

// publishPastFrozen has pub publish frozenFloodLines lines and waits until
// pub and every one of readers has read them all.
func publishPastFrozen(t *testing.T, pub *testConn, readers ...*testConn) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Go(func() { publishLines(t, pub, frozenFloodLines, frozenFloodSize) })
	for _, r := range append([]*testConn{pub}, readers...) {
		wg.Go(func() { readAll(t, r, "pub", frozenFloodLines, frozenFloodSize) })
	}
	wg.Wait()
}

// frozen dials a client that never reads (see dialUnread).
func frozen(t *testing.T, addr string) *testConn {
	t.Helper()
	conn := dialUnread(t, addr)
	return &testConn{Conn: conn, name: "slow", r: bufio.NewReaderSize(conn, 64<<10)}
}

// TestClientSlow follows the slow-client template: alice and bob read
// everything, in order, while slow never reads and is cut off (disconnect) or
// skipped for what it could not take (drop).
func TestClientSlow(t *testing.T) {
	for _, policy := range []slowPolicy{slowDisconnect, slowDrop} {
		t.Run(policy.String(), func(t *testing.T) {
			cfg := testConfig()
			cfg.slow = policy
			cfg.queue, cfg.maxPending = 64, 64<<10
			cfg.writeTimeout = time.Minute // so only the slow-client rule can act
			cfg.spillBuffer = 0            // the rule as it applies once the spill is full
			// Shorter than the default, so the test is quick; still long
			// enough for alice, bob and pub, goroutines of this busy process.
			cfg.stallLimit = 2 * time.Second
			ts := startTestServer(t, cfg)
			pub := dial(t, ts.addr, "pub")
			alice, bob := dial(t, ts.addr, "alice"), dial(t, ts.addr, "bob")
			slow := frozen(t, ts.addr)
			ts.waitClients(t, 4)
			sc := ts.serverSide(t, slow)

			const n = frozenFloodLines
			publishPastFrozen(t, pub, alice, bob)

			switch policy {
			case slowDisconnect:
				ts.waitClients(t, 3)
				waitFor(t, 5*time.Second, func() error {
					if got := ts.closes(reasonSlowClient); got != 1 {
						return fmt.Errorf("closes{slow_client} = %d; want 1", got)
					}
					if !ts.logs.has(`"reason":"slow_client"`, `"level":"warn"`) {
						return errors.New("no warn log line for the slow client")
					}
					return nil
				})
			case slowDrop:
				// Everything was fanned out: for slow, each message is
				// written, queued or dropped.
				waitFor(t, 5*time.Second, func() error {
					if got := sc.msgsOut.Load() + uint64(sc.pendingMsgs.Load()) + sc.dropped.Load(); got != n {
						return fmt.Errorf("slow: out+queued+dropped = %d; want %d", got, n)
					}
					return nil
				})
				dropped := sc.dropped.Load()
				if dropped == 0 {
					t.Fatalf("slow: dropped = 0; want some")
				}
				if got := ts.m.dropped[dropQueueFull].Load() + ts.m.dropped[dropMaxPending].Load(); got != dropped {
					t.Errorf("messages dropped = %d; want %d, slow's drops", got, dropped)
				}
				// slow is still connected and gets the rest, in order.
				prev := -1
				for range n - int(dropped) {
					l := slow.readLine(t)
					var i int
					fmt.Sscanf(l, "pub %d ", &i)
					if i <= prev {
						t.Fatalf("slow: line %d after %d", i, prev)
					}
					prev = i
				}
				ts.waitClients(t, 4)
			}
		})
	}
}

// TestClientFrozenReaders: k readers that never read pause the healthy ones
// about one --stall-pause in all, not one each, on real sockets: each frozen
// reader's clock is its own blocked write. --write-timeout closes them.
func TestClientFrozenReaders(t *testing.T) {
	for _, k := range []int{1, 2, 4} {
		t.Run(fmt.Sprintf("frozen=%d", k), func(t *testing.T) {
			cfg := testConfig()
			cfg.queue, cfg.maxPending = 64, 64<<10
			// What closes a frozen reader the hub went on without; long
			// enough for pub, alice, bob and carol, goroutines of this busy
			// process.
			cfg.writeTimeout = 3 * time.Second
			ts := startTestServer(t, cfg)
			healthy := []*testConn{dial(t, ts.addr, "pub")}
			for _, name := range []string{"alice", "bob", "carol", "dave"} {
				healthy = append(healthy, dial(t, ts.addr, name))
			}
			for range k {
				frozen(t, ts.addr)
			}
			ts.waitClients(t, len(healthy)+k)
			var wg sync.WaitGroup
			stalls := make([]time.Duration, len(healthy))
			wg.Go(func() { publishLines(t, healthy[0], frozenFloodLines, frozenFloodSize) })
			for i, r := range healthy {
				wg.Go(func() { stalls[i] = readAll(t, r, "pub", frozenFloodLines, frozenFloodSize) })
			}
			wg.Wait()
			ts.waitClients(t, len(healthy))
			longest := slices.Max(stalls)
			t.Logf("longest wait for a line: %v", longest)
			if longest > cfg.stallPause+time.Second {
				t.Errorf("with %d frozen readers the longest wait for a line = %v; want about one stall pause (%v)", k, longest, cfg.stallPause)
			}
			if got := ts.closes(reasonWriteTimeout); got != uint64(k) {
				t.Errorf("closes{write_timeout} = %d; want %d", got, k)
			}
		})
	}
}

// TestClientFastPublisher: one publisher writing as fast as it can to 100
// readers that keep reading disconnects nobody and loses nothing, while the
// hub goes on without one reader that stops reading, after a moment.
func TestClientFastPublisher(t *testing.T) {
	cfg := testConfig()
	cfg.writeTimeout = time.Minute // a stall of the write timeout would show
	cfg.queue, cfg.maxPending = 256, 256<<10
	cfg.sendBuffer = 64 << 10
	ts := startTestServer(t, cfg)
	pub := dial(t, ts.addr, "pub")
	var readers []*testConn
	for i := range 100 {
		readers = append(readers, dial(t, ts.addr, fmt.Sprintf("reader%d", i)))
	}
	frozen(t, ts.addr)
	ts.waitClients(t, 102)

	const n, size = 5000, 200 // 1 MB to each reader
	var wg sync.WaitGroup
	wg.Go(func() { publishLines(t, pub, n, size) })
	wg.Go(func() { readAll(t, pub, "pub", n, size) })
	stalls := make([]time.Duration, len(readers))
	for i, r := range readers {
		wg.Go(func() { stalls[i] = readAll(t, r, "pub", n, size) })
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if got := ts.m.clients.Load(); got != 102 {
		t.Errorf("clients = %d; want 102, nobody disconnected", got)
	}
	if got := ts.m.spills.Load(); got < 1 {
		t.Errorf("spills = %d; want at least 1, the frozen reader (a reader starved in this busy process may be another)", got)
	}
	// Generous: the hub may wait on a reader starved in this busy process
	// for the stall limit; the write timeout (a minute) must not show.
	t.Logf("longest wait for a line: %v", slices.Max(stalls))
	if longest := slices.Max(stalls); longest > 20*time.Second {
		t.Errorf("longest wait for a line = %v; want well under the write timeout", longest)
	}
}

// TestClientWriteTimeout: a client whose socket takes nothing for
// --write-timeout is closed, even while its queue has room.
func TestClientWriteTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.queue, cfg.maxPending = 1<<20, 1<<30 // the queue never fills
	cfg.writeTimeout = 300 * time.Millisecond
	ts := startTestServer(t, cfg)
	pub := dial(t, ts.addr, "pub")
	slow := frozen(t, ts.addr)
	ts.waitClients(t, 2)

	var wg sync.WaitGroup
	wg.Go(func() { publishLines(t, pub, 4000, 256) }) // 1 MB, past slow's socket buffers
	wg.Go(func() { readAll(t, pub, "pub", 4000, 256) })
	wg.Wait()
	ts.waitClients(t, 1)
	waitFor(t, 5*time.Second, func() error {
		if got := ts.closes(reasonWriteTimeout); got != 1 {
			return fmt.Errorf("closes{write_timeout} = %d; want 1", got)
		}
		return nil
	})
	if got := ts.closes(reasonSlowClient); got != 0 {
		t.Errorf("closes{slow_client} = %d; want 0", got)
	}
	expectLine(t, slow, line("pub", 0, 256)) // it got what its socket took, then the close
}
