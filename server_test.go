package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestServeMaxClients(t *testing.T) {
	cfg := testConfig()
	cfg.maxClients = 2
	ts := startTestServer(t, cfg)
	alice, bob := dial(t, ts.addr, "alice"), dial(t, ts.addr, "bob")
	ts.waitClients(t, 2)

	carol := dial(t, ts.addr, "carol")
	expectLine(t, carol, "echohub: server full (max 2 clients); closing\n") // exactly one notice line
	expectClosed(t, carol)
	if got := ts.closes(reasonServerFull); got != 1 {
		t.Errorf("closes{server_full} = %d; want 1", got)
	}

	// A freed slot is reusable at once: as soon as bob's close is done.
	bob.Close()
	waitFor(t, 5*time.Second, func() error {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		if len(ts.conns) != 1 {
			return fmt.Errorf("connections = %d; want 1", len(ts.conns))
		}
		return nil
	})
	dave := dial(t, ts.addr, "dave")
	ts.waitClients(t, 2)
	alice.send(t, "welcome dave\n")
	expectLine(t, dave, "welcome dave\n")
	if got := ts.closes(reasonServerFull); got != 1 {
		t.Errorf("closes{server_full} = %d; want still 1", got)
	}
}

// flakyListener fails its first n Accepts with a temporary error, as a
// listener out of file descriptors (EMFILE) does.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return l.Listener.Accept()
}

func TestServeAcceptBackoff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: ln}
	fl.fails.Store(3)
	logs := new(logBuffer)
	s := newServer(testConfig(), zerolog.New(logs))
	served := make(chan error, 1)
	go func() { served <- s.Serve(fl) }()

	alice := dial(t, ln.Addr().String(), "alice")
	alice.send(t, "served after EMFILE\n")
	expectLine(t, alice, "served after EMFILE\n")
	if got := s.m.acceptErrors.Load(); got != 3 {
		t.Errorf("accept errors = %d; want 3", got)
	}
	if !logs.has(`"level":"warn"`, "too many open files", `"accept failed; retrying"`) {
		t.Errorf("no warn log line for the accept errors")
	}
	alice.Close()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown() = %v; want nil", err)
	}
	if err := <-served; !errors.Is(err, errServerClosed) {
		t.Errorf("Serve() = %v; want errServerClosed", err)
	}
}

// brokenListener fails for good: Serve must return the error, not spin.
type brokenListener struct{ net.Listener }

func (brokenListener) Accept() (net.Conn, error) { return nil, errors.New("listener broken") }

func TestServeAcceptFatal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(testConfig(), zerolog.Nop())
	if err := s.Serve(brokenListener{ln}); err == nil || !strings.Contains(err.Error(), "listener broken") {
		t.Errorf("Serve() = %v; want the accept error", err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown() = %v; want nil", err)
	}
	ln.Close()
}

func TestServeAfterShutdown(t *testing.T) {
	s := newServer(testConfig(), zerolog.Nop())
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown() = %v; want nil", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln); !errors.Is(err, errServerClosed) {
		t.Errorf("Serve() = %v; want errServerClosed", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Errorf("Dial succeeded; want the listener closed by Serve")
	}
}

// TestServeShutdownFlushesQueues: everything the server read before
// shutdown reaches every client, then each connection ends with EOF.
func TestServeShutdownFlushesQueues(t *testing.T) {
	defer goleak.VerifyNone(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(testConfig(), zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel))
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	addr := ln.Addr().String()
	alice, bob := dial(t, addr, "alice"), dial(t, addr, "bob")
	waitFor(t, 5*time.Second, func() error {
		if got := s.m.clients.Load(); got != 2 {
			return fmt.Errorf("clients = %d; want 2", got)
		}
		return nil
	})

	// alice publishes while the server shuts down: bob must get exactly the
	// lines the server read, a prefix of alice's, each whole.
	const n, size = 5000, 100
	go publishLines(t, alice, n, size)
	go io.Copy(io.Discard, alice) // alice reads her echoes, so she never falls behind
	waitFor(t, 5*time.Second, func() error {
		if got := s.m.messagesReceived.Load(); got < 100 {
			return fmt.Errorf("messages received = %d; want some", got)
		}
		return nil
	})
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	got := 0
	bob.SetReadDeadline(time.Now().Add(ioTimeout))
	for {
		l, err := bob.r.ReadString('\n')
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("bob: read: %v after %d lines", err, got)
		}
		if want := line("alice", got, size); l != want {
			t.Fatalf("bob: line %d = %q; want %q", got, l, want)
		}
		got++
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown() = %v; want nil", err)
	}
	if err := <-served; !errors.Is(err, errServerClosed) {
		t.Errorf("Serve() = %v; want errServerClosed", err)
	}
	if want := s.m.messagesReceived.Load(); uint64(got) != want {
		t.Errorf("bob got %d lines; want %d, every line the server read", got, want)
	}
	if got := s.m.closes[reasonShutdown].Load(); got != 2 {
		t.Errorf("closes{shutdown} = %d; want 2", got)
	}
	alice.Close()
	bob.Close()
}

// TestServeShutdownTimeout: a client that never reads cannot hold shutdown
// past its deadline; everything is closed and no goroutine is left.
func TestServeShutdownTimeout(t *testing.T) {
	defer goleak.VerifyNone(t)
	cfg := testConfig()
	cfg.queue, cfg.maxPending = 100000, 64<<20 // slow is never cut off
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel))
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	addr := ln.Addr().String()
	pub := dial(t, addr, "pub")
	slow := frozen(t, addr)
	waitFor(t, 5*time.Second, func() error {
		if got := s.m.clients.Load(); got != 2 {
			return fmt.Errorf("clients = %d; want 2", got)
		}
		return nil
	})
	go func() {
		for range 1000 { // bounded: about 1 MB
			if _, err := io.WriteString(pub, strings.Repeat("z", 1023)+"\n"); err != nil {
				return
			}
		}
	}()
	go io.Copy(io.Discard, pub)
	sc := asTestServer(s).serverSide(t, slow)
	waitFor(t, 10*time.Second, func() error {
		if sc.pendingMsgs.Load() == 0 {
			return errors.New("nothing queued for slow yet")
		}
		return nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown() = %v; want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Shutdown took %v; want about its 300ms deadline", d)
	}
	if err := <-served; !errors.Is(err, errServerClosed) {
		t.Errorf("Serve() = %v; want errServerClosed", err)
	}
	pub.Close()
	slow.Close()
}

// asTestServer wraps a server started by hand for the testServer helpers.
func asTestServer(s *server) *testServer { return &testServer{server: s} }

// openFiles returns how many file descriptors this process has open.
func openFiles(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(fds)
}

// TestServeChurn: connecting and disconnecting leaks no goroutine, file
// descriptor or registry entry.
func TestServeChurn(t *testing.T) {
	srv := startTestServer(t, testConfig())
	alice := dial(t, srv.addr, "alice")
	srv.waitClients(t, 1)
	baseline, baseFiles := runtime.NumGoroutine(), openFiles(t)

	for i := range 300 {
		c, err := net.Dial("tcp", srv.addr)
		if err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			fmt.Fprintf(c, "churn %d\n", i)
		}
		if i%2 == 0 {
			c.(*net.TCPConn).SetLinger(0) // half of them reset
		}
		c.Close()
	}
	waitFor(t, 10*time.Second, func() error {
		srv.mu.Lock()
		n := len(srv.conns)
		srv.mu.Unlock()
		if n != 1 || srv.m.clients.Load() != 1 {
			return fmt.Errorf("connections = %d, clients = %d; want 1 and 1", n, srv.m.clients.Load())
		}
		if g := runtime.NumGoroutine(); g > baseline {
			return fmt.Errorf("goroutines = %d; want at most %d as before the churn", g, baseline)
		}
		if f := openFiles(t); f > baseFiles {
			return fmt.Errorf("open files = %d; want at most %d as before the churn", f, baseFiles)
		}
		return nil
	})
	alice.send(t, "after churn\n")
	for {
		if l := alice.readLine(t); l == "after churn\n" {
			break
		} else if !strings.HasPrefix(l, "churn ") {
			t.Fatalf("alice: read %q; want churn lines, then %q", l, "after churn\n")
		}
	}
}

// TestServeIdleCost guards the memory an idle client costs (docs/design.md,
// idle cost): both its goroutines must stay on the smallest stack, 2 KiB, also
// after a message. A frame that grows on the way to a parked read or write
// doubles a stack for good, which this catches, deterministically.
func TestServeIdleCost(t *testing.T) {
	const conns = 300
	cfg := testConfig()
	cfg.logLevel = zerolog.InfoLevel // a debug log call on the way grows a stack too
	srv := startTestServer(t, cfg)
	before := memNow()
	clients := make([]*testConn, conns)
	for i := range clients {
		clients[i] = dial(t, srv.addr, fmt.Sprintf("idle%d", i))
	}
	srv.waitClients(t, conns)
	clients[0].send(t, "one message to everyone\n")
	waitFor(t, 5*time.Second, func() error {
		if got := srv.m.messagesDelivered.Load(); got != conns {
			return fmt.Errorf("messages delivered = %d; want %d", got, conns)
		}
		return nil
	})
	after := memNow()
	stack := float64(after.stack-before.stack) / conns
	heap := float64(int64(after.heap)-int64(before.heap)) / conns
	t.Logf("per idle connection: %.0f B of stack, %.0f B of heap (client side included)", stack, heap)
	limit := 4096 + 512.0
	if raceEnabled {
		limit *= 2 // the race detector doubles every stack
	}
	if stack > limit {
		t.Errorf("stack per idle connection = %.0f B; want two goroutines on the smallest stack (at most %.0f B)", stack, limit)
	}
}
