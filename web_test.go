package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"
)

// TestWebShutdown: at shutdown a WebSocket client gets everything queued for
// it, then a close frame with status 1001 (going away).
func TestWebShutdown(t *testing.T) {
	ts, url := startWeb(t, testWebConfig())
	alice := dial(t, ts.addr, "alice")
	bob := dialWS(t, url, "bob", nil)
	ts.waitClients(t, 2)
	const n = 500
	shut := publishThenShutdown(t, ts, alice, n, 64)
	for i := range n {
		expectWS(t, bob, websocket.MessageText, strings.TrimSuffix(line("alice", i, 64), "\n"))
	}
	expectWSClose(t, bob, websocket.StatusGoingAway, shutdownCloseText)
	if err := <-shut; err != nil {
		t.Errorf("Shutdown() = %v; want nil", err)
	}
	if got := ts.closes(reasonShutdown); got != 2 {
		t.Errorf("closes{shutdown} = %d; want 2", got)
	}
}

// TestWebShutdownStopsAccepting: the web listener stops accepting at the
// first step of Shutdown, with the TCP listener, not after the drain; a
// WebSocket client already connected still gets everything queued for it,
// then a close frame with status 1001.
func TestWebShutdownStopsAccepting(t *testing.T) {
	ts, url := startWeb(t, testWebConfig())
	alice := dial(t, ts.addr, "alice")
	bob := frozenWS(t, url) // reads nothing until the drain has begun: Shutdown waits for it
	ts.waitClients(t, 2)
	const n, size = 400, 512 // far more than the socket buffers hold, well under --queue and --max-pending
	shut := publishThenShutdown(t, ts, alice, n, size)

	waitFor(t, 5*time.Second, func() error {
		if !ts.shuttingDown() {
			return errors.New("Shutdown has not begun")
		}
		dctx, dcancel := context.WithTimeout(context.Background(), ioTimeout)
		defer dcancel()
		ws, _, err := websocket.Dial(dctx, url, nil)
		if err == nil {
			ws.CloseNow()
			return errors.New("a WebSocket dial during the drain was accepted")
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("dial during the drain: %v; want connection refused", err)
		}
		return nil
	})
	select {
	case err := <-shut:
		t.Fatalf("Shutdown() = %v before bob read his queue; want it still draining", err)
	default:
	}
	readAllWS(t, bob, "alice", n, size)
	expectWSClose(t, bob, websocket.StatusGoingAway, shutdownCloseText)
	readAll(t, alice, "alice", n, size)
	if err := <-shut; err != nil {
		t.Errorf("Shutdown() = %v; want nil", err)
	}
	if got := ts.closes(reasonShutdown); got != 2 {
		t.Errorf("closes{shutdown} = %d; want 2", got)
	}
}

// TestWebIdleCost guards the stacks of an idle WebSocket client (docs/web.md,
// idle cost): its reader and writer must stay on Go's smallest stack, 2 KiB,
// as a TCP client's do (TestServeIdleCost), also after a message has gone
// through the write path. A frame that grows on the way to a parked read or
// write doubles a stack for good, which this catches, deterministically.
func TestWebIdleCost(t *testing.T) {
	const conns = 300
	cfg := testWebConfig()
	cfg.logLevel = zerolog.InfoLevel // a debug log call on the way grows a stack too
	cfg.keepalive = 0                // no ping may run the reader through the library meanwhile
	ts := startTestServer(t, cfg)
	webAddr := startTestWeb(t, ts)
	alice := dial(t, ts.addr, "alice")
	ts.waitClients(t, 1)
	before := memNow()
	for range conns {
		dialRawWS(t, webAddr)
	}
	ts.waitClients(t, conns+1)
	idle := memNow()
	alice.send(t, "one message to everyone\n")
	waitFor(t, 5*time.Second, func() error {
		if got := ts.m.messagesDelivered.Load(); got != conns+1 {
			return fmt.Errorf("messages delivered = %d; want %d", got, conns+1)
		}
		return nil
	})
	after := memNow()
	stackIdle := float64(idle.stack-before.stack) / conns
	stackAfter := float64(after.stack-before.stack) / conns
	t.Logf("per idle WebSocket client: %.0f B of stack (%.0f B after one message), %.0f B of heap (%.0f)",
		stackIdle, stackAfter, float64(int64(idle.heap)-int64(before.heap))/conns, float64(int64(after.heap)-int64(before.heap))/conns)
	limit := 4096 + 512.0
	if raceEnabled {
		limit *= 2 // the race detector doubles every stack
	}
	if stackAfter > limit {
		t.Errorf("stack per idle WebSocket client after one message = %.0f B; want two goroutines on the smallest stack (at most %.0f B)", stackAfter, limit)
	}
}

// TestWebClientsTransport: /clients names each client's transport.
func TestWebClientsTransport(t *testing.T) {
	cfg := testWebConfig()
	cfg.metricsListen = "127.0.0.1:0"
	ts, url := startWeb(t, cfg)
	api := startTestAPI(t, ts)
	dial(t, ts.addr, "alice")
	bob := dialWS(t, url, "bob", nil)
	ts.waitClients(t, 2)
	var got []string
	for _, c := range getClients(t, api).Clients {
		got = append(got, c.Transport)
	}
	if diff := cmp.Diff([]string{"tcp", "ws"}, got); diff != "" {
		t.Errorf("/clients transports (-want +got):\n%s", diff)
	}
	bob.Close(websocket.StatusNormalClosure, "")
	waitFor(t, 5*time.Second, func() error {
		closed := getClients(t, api).Closed
		if len(closed) != 1 || closed[0].Transport != "ws" || closed[0].Reason != "eof" {
			return fmt.Errorf("closed clients = %+v; want bob, ws, eof", closed)
		}
		return nil
	})
	m, err := scrape(t, api)
	if err != nil {
		t.Fatal(err)
	}
	if m["echohub_websocket_upgrades_total"] != 1 || m["echohub_clients"] != 1 {
		t.Errorf("websocket_upgrades_total = %v, clients = %v; want 1, 1", m["echohub_websocket_upgrades_total"], m["echohub_clients"])
	}
}

// TestWebKeepalive: a WebSocket client that answers pings stays connected
// however long it is idle; one that stops reading, so answers none, is
// closed as read_error after about two --keepalive periods.
func TestWebKeepalive(t *testing.T) {
	cfg := testWebConfig()
	cfg.keepalive = time.Second // a pong may take a while on a busy machine under -race (300ms was flaky)
	ts, url := startWeb(t, cfg)
	alice := dialWS(t, url, "alice", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	alice.CloseRead(ctx) // reads (and so answers pings) without expecting messages
	ts.waitClients(t, 1)
	var aliceSide *wsConn
	ts.mu.Lock()
	for c := range ts.conns { // alice's, the only one: ids follow the handshakes, not the dials
		aliceSide = c.conn.(*wsConn)
	}
	ts.mu.Unlock()
	dialWS(t, url, "mute", nil)
	ts.waitClients(t, 2)
	start := time.Now()
	waitCloses(t, ts, reasonReadError, 1)
	ts.waitClients(t, 1)
	// alice, idle all along, answers ping after ping and stays connected.
	waitFor(t, 10*time.Second, func() error {
		if seen := time.Unix(0, aliceSide.lastSeen.Load()); seen.Before(start.Add(3 * cfg.keepalive)) {
			return fmt.Errorf("alice last answered a ping %v after the start; want 3 keepalive periods", seen.Sub(start))
		}
		return nil
	})
	if got := ts.m.clients.Load(); got != 1 {
		t.Errorf("clients = %d; want 1, alice", got)
	}
	if !ts.logs.has("no pong") {
		t.Error("no log line for the unanswered ping")
	}
}

// TestWebTLS: with --tls-cert the web listener serves the page over HTTPS and
// WebSocket clients over WSS, with the hub's certificate, and they share the
// hub with TLS clients over TCP.
func TestWebTLS(t *testing.T) {
	ca := newTestCA(t, "ca")
	cfg := testTLSConfig(t, ca, false)
	cfg.webListen = "127.0.0.1:0"
	ts := startTestServer(t, cfg)
	host := startTestWeb(t, ts)
	hc := &http.Client{Timeout: ioTimeout, Transport: &http.Transport{TLSClientConfig: clientTLS(t, ca, nil), DisableKeepAlives: true}}
	resp, err := hc.Get("https://" + host + "/")
	if err != nil {
		t.Fatalf("GET https://%s/: %v", host, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Errorf("GET https://%s/ = %d, TLS %v; want 200 over TLS", host, resp.StatusCode, resp.TLS != nil)
	}
	alice := dialTLS(t, ts.addr, "alice", clientTLS(t, ca, nil))
	bob := dialWS(t, "wss://"+host+"/ws", "bob", &websocket.DialOptions{HTTPClient: hc})
	ts.waitClients(t, 2)
	bob.sendWS(t, websocket.MessageText, "over wss")
	expectLine(t, alice, "over wss\n")
	expectWS(t, bob, websocket.MessageText, "over wss")
	alice.send(t, "over tls\n")
	expectWS(t, bob, websocket.MessageText, "over tls")
	ts.mu.Lock()
	var transports []string
	for c := range ts.conns {
		transports = append(transports, c.transport())
	}
	ts.mu.Unlock()
	if !strings.Contains(strings.Join(transports, ","), "wss") {
		t.Errorf("transports = %v; want a wss client", transports)
	}
	// A plain WebSocket client gets no upgrade from a TLS listener.
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	if ws, _, err := websocket.Dial(ctx, "ws://"+host+"/ws", nil); err == nil {
		ws.CloseNow()
		t.Error("plain ws:// to a TLS web listener upgraded; want it refused")
	}

	// A reload (SIGHUP) applies to new WSS handshakes too.
	renewed := ca.issue(t, "server", true) // rewrites the files cfg names
	if err := cfg.tls.reload(); err != nil {
		t.Fatal(err)
	}
	ws, resp, err := websocket.Dial(ctx, "wss://"+host+"/ws", &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatalf("wss after reload: %v", err)
	}
	defer ws.CloseNow()
	if resp.TLS == nil || resp.TLS.PeerCertificates[0].SerialNumber.Cmp(renewed.serial) != 0 {
		t.Errorf("wss after reload: the server presented another certificate than the renewed one (serial %v)", renewed.serial)
	}
}

// TestWebFlags: the web flags reach the config from flags and env, and bad
// values fail with one line naming the flag.
func TestWebFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--web-origin", "app.example.com"}, "echohub: --web-origin: needs --web-listen\n"},
		{[]string{"--web-listen", "127.0.0.1:0", "--web-origin", "[app"}, "echohub: --web-origin: invalid pattern \"[app\" (want a host pattern such as app.example.com, *.example.com or https://*.example.com)\n"},
		{[]string{"--web-listen", "127.0.0.1:-1"}, "echohub: --web-listen: listen tcp: address -1: invalid port\n"},
	} {
		code, stdout, stderr := runCLI(context.Background(), "", append([]string{"serve", "--listen", "127.0.0.1:0"}, tc.args...)...)
		if code != 1 || stdout != "" || stderr != tc.want {
			t.Errorf("run(serve %v) = %d, %q, %q; want 1, no output, %q", tc.args, code, stdout, stderr, tc.want)
		}
	}
	t.Setenv("ECHOHUB_WEB_ORIGIN", "a.example,https://*.b.example")
	app := &cli.App{Flags: serveFlags(), Action: func(cCtx *cli.Context) error {
		cfg, err := configFromCLI(cCtx)
		if err != nil {
			return err
		}
		if diff := cmp.Diff([]string{"a.example", "https://*.b.example"}, cfg.webOrigins); diff != "" || cfg.webListen != "127.0.0.1:8080" {
			t.Errorf("config: web listen %q; origins (-want +got):\n%s", cfg.webListen, diff)
		}
		return nil
	}}
	if err := app.Run([]string{"serve", "--web-listen", "127.0.0.1:8080"}); err != nil {
		t.Fatal(err)
	}
}

// publishThenShutdown has pub publish n lines of size bytes, waits until the
// hub has read them all, and starts ts.Shutdown, with 5 s to drain; the
// channel yields what it returns.
func publishThenShutdown(t *testing.T, ts *testServer, pub *testConn, n, size int) <-chan error {
	t.Helper()
	publishLines(t, pub, n, size)
	waitFor(t, 5*time.Second, func() error {
		if got := ts.m.messagesReceived.Load(); got != uint64(n) {
			return fmt.Errorf("messages received = %d; want %d", got, n)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	shut := make(chan error, 1)
	go func() { shut <- ts.Shutdown(ctx) }()
	return shut
}
