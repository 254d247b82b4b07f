package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"
	"github.com/urfave/cli/v2"
)

// testWebConfig returns testConfig with the web listener on 127.0.0.1:0.
func testWebConfig() config {
	cfg := testConfig()
	cfg.webListen = "127.0.0.1:0"
	return cfg
}

// startWeb runs a server for cfg with its web listener, and returns it and
// the WebSocket URL.
func startWeb(t *testing.T, cfg config) (*testServer, string) {
	t.Helper()
	ts := startTestServer(t, cfg)
	return ts, "ws://" + startTestWeb(t, ts) + "/ws"
}

// len32 frames payload for --framing len32.
func len32(payload string) string {
	return string(binary.BigEndian.AppendUint32(nil, uint32(len(payload)))) + payload
}

// readN reads exactly n bytes from c.
func readN(t *testing.T, c *testConn, n int) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	buf := make([]byte, n)
	if _, err := io.ReadFull(c.r, buf); err != nil {
		t.Fatalf("%s: read %d bytes: %v", c.name, n, err)
	}
	return string(buf)
}

// TestWebCrossTransport: in every framing, what a TCP client sends reaches
// WebSocket clients, and what a WebSocket client sends reaches TCP clients
// and the other WebSocket clients, mapped as docs/web.md says.
func TestWebCrossTransport(t *testing.T) {
	text, binary := websocket.MessageText, websocket.MessageBinary
	type step struct {
		fromTCP string // alice, over TCP, sends this
		fromWS  string // or bob, over WebSocket, sends this, as msgType
		msgType websocket.MessageType
		tcp     string                  // alice then reads exactly this
		ws      []string                // and bob and carol read these messages
		wsTypes []websocket.MessageType // of these types
	}
	for _, tc := range []struct {
		mode  framing
		steps []step
	}{
		{framingLine, []step{
			{fromTCP: "hello\n", tcp: "hello\n", ws: []string{"hello"}, wsTypes: []websocket.MessageType{text}},
			{fromTCP: "\xff\xfe\n", tcp: "\xff\xfe\n", ws: []string{"\xff\xfe"}, wsTypes: []websocket.MessageType{binary}},
			{fromWS: "from bob", msgType: text, tcp: "from bob\n", ws: []string{"from bob"}, wsTypes: []websocket.MessageType{text}},
			{fromWS: "ends in newline\n", msgType: text, tcp: "ends in newline\n", ws: []string{"ends in newline"}, wsTypes: []websocket.MessageType{text}},
			{fromWS: "a\nb\n\nc", msgType: binary, tcp: "a\nb\n\nc\n", ws: []string{"a", "b", "", "c"}, wsTypes: []websocket.MessageType{text, text, text, text}},
			{fromWS: "", msgType: text, tcp: "\n", ws: []string{""}, wsTypes: []websocket.MessageType{text}},
		}},
		{framingLen32, []step{
			{fromTCP: len32("abc") + len32(""), tcp: len32("abc") + len32(""), ws: []string{"abc", ""}, wsTypes: []websocket.MessageType{binary, binary}},
			{fromWS: "x\ny", msgType: binary, tcp: len32("x\ny"), ws: []string{"x\ny"}, wsTypes: []websocket.MessageType{binary}},
			{fromWS: "text too", msgType: text, tcp: len32("text too"), ws: []string{"text too"}, wsTypes: []websocket.MessageType{binary}},
		}},
		{framingRaw, []step{
			{fromTCP: "chunk", tcp: "chunk", ws: []string{"chunk"}, wsTypes: []websocket.MessageType{binary}},
			{fromWS: "ws chunk\n", msgType: binary, tcp: "ws chunk\n", ws: []string{"ws chunk\n"}, wsTypes: []websocket.MessageType{binary}},
		}},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			cfg := testWebConfig()
			cfg.framing = tc.mode
			ts, url := startWeb(t, cfg)
			alice := dial(t, ts.addr, "alice")
			bob, carol := dialWS(t, url, "bob", nil), dialWS(t, url, "carol", nil)
			ts.waitClients(t, 3)
			for _, st := range tc.steps {
				if st.fromWS != "" || st.fromTCP == "" {
					bob.sendWS(t, st.msgType, st.fromWS)
				} else {
					alice.send(t, st.fromTCP)
				}
				if got := readN(t, alice, len(st.tcp)); got != st.tcp {
					t.Errorf("alice: read %q; want %q", got, st.tcp)
				}
				for _, c := range []*wsTestConn{bob, carol} {
					for i, want := range st.ws {
						expectWS(t, c, st.wsTypes[i], want)
					}
				}
			}
			expectNothing(t, alice, 50*time.Millisecond)
		})
	}
}

// TestWebOneOrder: TCP and WebSocket publishers interleaved reach every
// client, of either transport, in one order.
func TestWebOneOrder(t *testing.T) {
	ts, url := startWeb(t, testWebConfig())
	alice, bob := dial(t, ts.addr, "alice"), dial(t, ts.addr, "bob")
	carol, dave := dialWS(t, url, "carol", nil), dialWS(t, url, "dave", nil)
	ts.waitClients(t, 4)
	const n = 200
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			alice.send(t, fmt.Sprintf("alice %d\n", i))
		}
	}()
	for i := range n {
		carol.sendWS(t, websocket.MessageText, fmt.Sprintf("carol %d", i))
	}
	<-done
	var order []string
	for range 2 * n {
		order = append(order, strings.TrimSuffix(bob.readLine(t), "\n"))
	}
	for _, c := range []*wsTestConn{carol, dave} {
		for i, want := range order {
			if _, got, err := c.readWS(t); err != nil || got != want {
				t.Fatalf("%s: message %d: %q, %v; want %q as bob got it", c.name, i, got, err, want)
			}
		}
	}
	for i, want := range order {
		if got := strings.TrimSuffix(alice.readLine(t), "\n"); got != want {
			t.Fatalf("alice: line %d: %q; want %q as bob got it", i, got, want)
		}
	}
}

// TestWebExcludeSender: --exclude-sender applies to WebSocket senders too.
func TestWebExcludeSender(t *testing.T) {
	cfg := testWebConfig()
	cfg.excludeSender = true
	ts, url := startWeb(t, cfg)
	alice := dial(t, ts.addr, "alice")
	bob := dialWS(t, url, "bob", nil)
	ts.waitClients(t, 2)
	bob.sendWS(t, websocket.MessageText, "not for bob")
	expectLine(t, alice, "not for bob\n")
	alice.send(t, "for bob\n")
	expectWS(t, bob, websocket.MessageText, "for bob")
}

// TestWebMessageTooLong: a WebSocket message over --max-message (in line
// mode, counting the '\n' it becomes) closes its sender with status 1009 and
// the TCP notice text; the others go on.
func TestWebMessageTooLong(t *testing.T) {
	for _, tc := range []struct {
		mode     framing
		fits     string
		tooLong  string
		fitsTCP  string
		fitsType websocket.MessageType
	}{
		{framingLine, strings.Repeat("x", 15), strings.Repeat("x", 16), strings.Repeat("x", 15) + "\n", websocket.MessageText},
		{framingLen32, strings.Repeat("x", 16), strings.Repeat("x", 17), len32(strings.Repeat("x", 16)), websocket.MessageBinary},
		{framingRaw, strings.Repeat("x", 16), strings.Repeat("x", 17), strings.Repeat("x", 16), websocket.MessageBinary},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			cfg := testWebConfig()
			cfg.framing, cfg.maxMessage = tc.mode, 16
			ts, url := startWeb(t, cfg)
			alice := dial(t, ts.addr, "alice")
			bob, carol := dialWS(t, url, "bob", nil), dialWS(t, url, "carol", nil)
			ts.waitClients(t, 3)
			bob.sendWS(t, tc.fitsType, tc.fits)
			if got := readN(t, alice, len(tc.fitsTCP)); got != tc.fitsTCP {
				t.Fatalf("alice: read %q; want %q", got, tc.fitsTCP)
			}
			expectWS(t, carol, tc.fitsType, tc.fits)
			expectWS(t, bob, tc.fitsType, tc.fits)

			bob.sendWS(t, websocket.MessageText, tc.tooLong)
			expectWSClose(t, bob, websocket.StatusMessageTooBig, "echohub: message too long (max 16 bytes); closing")
			waitCloses(t, ts, reasonMessageTooLong, 1)
			ts.waitClients(t, 2)
			carol.sendWS(t, tc.fitsType, tc.fits)
			if got := readN(t, alice, len(tc.fitsTCP)); got != tc.fitsTCP {
				t.Fatalf("alice: read %q; want %q", got, tc.fitsTCP)
			}
			expectNothing(t, alice, 50*time.Millisecond)
		})
	}
}

// TestWebOrigin: a page from another origin may not open a WebSocket (cross-
// site WebSocket hijacking) unless --web-origin allows it; the page's own
// origin and non-browser clients (no Origin) may.
func TestWebOrigin(t *testing.T) {
	cfg := testWebConfig()
	cfg.webOrigins = []string{"*.allowed.example", "https://exact.example"}
	ts, url := startWeb(t, cfg)
	host := strings.TrimSuffix(strings.TrimPrefix(url, "ws://"), "/ws")
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{"http://" + host, true},
		{"http://app.allowed.example", true},
		{"https://exact.example", true},
		{"http://exact.example", false},
		{"https://evil.example", false},
		{"http://allowed.example.evil.example", false},
		{"null", false},
	} {
		opts := &websocket.DialOptions{HTTPHeader: http.Header{}}
		if tc.origin != "" {
			opts.HTTPHeader.Set("Origin", tc.origin)
		}
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		ws, resp, err := websocket.Dial(ctx, url, opts)
		cancel()
		if tc.ok {
			if err != nil {
				t.Errorf("Origin %q: %v; want the upgrade", tc.origin, err)
				continue
			}
			ws.Close(websocket.StatusNormalClosure, "")
			continue
		}
		if err == nil {
			ws.CloseNow()
			t.Errorf("Origin %q: upgraded; want 403", tc.origin)
			continue
		}
		if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("Origin %q: %v; want 403", tc.origin, err)
		}
	}
	if got := ts.m.wsBadOrigin.Load(); got != 4 {
		t.Errorf("websocket_origin_refused_total = %d; want 4", got)
	}
	if !ts.logs.has(`"origin":"https://evil.example"`, "origin not allowed") {
		t.Error("no log line for the refused origin")
	}
}

// TestWebAbruptClose: a WebSocket client that goes without a close frame is
// closed as eof, and the others go on.
func TestWebAbruptClose(t *testing.T) {
	ts, url := startWeb(t, testWebConfig())
	alice := dial(t, ts.addr, "alice")
	bob, carol := dialWS(t, url, "bob", nil), dialWS(t, url, "carol", nil)
	ts.waitClients(t, 3)
	bob.sendWS(t, websocket.MessageText, "last words")
	expectWS(t, bob, websocket.MessageText, "last words") // so nothing is unread, and closing sends FIN, not RST
	bob.CloseNow()                                        // no close frame
	expectLine(t, alice, "last words\n")
	waitCloses(t, ts, reasonEOF, 1)
	ts.waitClients(t, 2)
	alice.send(t, "still here\n")
	expectWS(t, carol, websocket.MessageText, "last words")
	expectWS(t, carol, websocket.MessageText, "still here")
	if got := ts.m.wsClients.Load(); got != 1 {
		t.Errorf("websocket_clients = %d; want 1", got)
	}
}

// TestWebShutdown: at shutdown a WebSocket client gets everything queued for
// it, then a close frame with status 1001 (going away).
func TestWebShutdown(t *testing.T) {
	ts, url := startWeb(t, testWebConfig())
	alice := dial(t, ts.addr, "alice")
	bob := dialWS(t, url, "bob", nil)
	ts.waitClients(t, 2)
	const n = 500
	publishLines(t, alice, n, 64)
	waitFor(t, 5*time.Second, func() error {
		if got := ts.m.messagesReceived.Load(); got != n {
			return fmt.Errorf("messages received = %d; want %d", got, n)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- ts.Shutdown(ctx) }()
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

// TestWebAdmission: --max-clients and --max-clients-per-ip count WebSocket
// clients with TCP ones and refuse them with a close frame (1013) carrying
// the TCP notice; --allow and --deny refuse the page and the upgrade alike.
func TestWebAdmission(t *testing.T) {
	t.Run("max-clients", func(t *testing.T) {
		cfg := testWebConfig()
		cfg.maxClients = 2
		ts, url := startWeb(t, cfg)
		dial(t, ts.addr, "alice")
		dialWS(t, url, "bob", nil)
		ts.waitClients(t, 2)
		carol := dialWS(t, url, "carol", nil)
		expectWSClose(t, carol, websocket.StatusTryAgainLater, "echohub: server full (max 2 clients); closing")
		dave := dial(t, ts.addr, "dave")
		expectLine(t, dave, "echohub: server full (max 2 clients); closing\n")
		waitCloses(t, ts, reasonServerFull, 2)
	})
	t.Run("max-clients-per-ip", func(t *testing.T) {
		cfg := testWebConfig()
		cfg.maxClientsPerIP = 1
		ts, url := startWeb(t, cfg)
		dialWS(t, url, "alice", nil)
		ts.waitClients(t, 1)
		bob := dialWS(t, url, "bob", nil)
		expectWSClose(t, bob, websocket.StatusTryAgainLater, "echohub: too many connections from 127.0.0.1 (max 1); closing")
		carol := dial(t, ts.addr, "carol")
		expectLine(t, carol, "echohub: too many connections from 127.0.0.1 (max 1); closing\n")
	})
	t.Run("deny", func(t *testing.T) {
		cfg := testWebConfig()
		var err error
		cfg.deny, err = parsePrefixes([]string{"127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		ts, url := startWeb(t, cfg)
		base := "http://" + strings.TrimSuffix(strings.TrimPrefix(url, "ws://"), "/ws")
		if code, body := httpGet(t, base+"/"); code != http.StatusForbidden || body != "echohub: not allowed from 127.0.0.1\n" {
			t.Errorf("GET / = %d, %q; want 403 and the notice", code, body)
		}
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		if ws, resp, err := websocket.Dial(ctx, url, nil); err == nil {
			ws.CloseNow()
			t.Error("upgrade from a denied address succeeded; want 403")
		} else if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("upgrade from a denied address: %v; want 403", err)
		}
		waitCloses(t, ts, reasonDenied, 2)
	})
}

// TestWebPage: / is the page, with a Content-Security-Policy that allows its
// own inline script and nothing from elsewhere; /stats has the figures it
// shows.
func TestWebPage(t *testing.T) {
	cfg := testWebConfig()
	cfg.framing = framingLen32
	ts, url := startWeb(t, cfg)
	base := "http://" + strings.TrimSuffix(strings.TrimPrefix(url, "ws://"), "/ws")
	dialWS(t, url, "alice", nil)
	dial(t, ts.addr, "bob")
	ts.waitClients(t, 2)

	code, body := httpGet(t, base+"/")
	if code != http.StatusOK || body != string(pageHTML) {
		t.Errorf("GET / = %d, %d bytes; want 200 and the page", code, len(body))
	}
	csp := pageCSP(pageHTML)
	if strings.Count(csp, "'sha256-") != 2 || !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "unsafe") {
		t.Errorf("CSP = %q; want one hash each for the script and the style, and nothing unsafe", csp)
	}
	for _, ref := range []string{"http://", "https://", "//cdn", "src=\"", "@import"} {
		if strings.Contains(string(pageHTML), ref) {
			t.Errorf("the page contains %q; it must fetch nothing from elsewhere", ref)
		}
	}
	if code, _ := httpGet(t, base+"/nothing"); code != http.StatusNotFound {
		t.Errorf("GET /nothing = %d; want 404", code)
	}

	code, body = httpGet(t, base+"/stats")
	var got webStats
	if err := json.Unmarshal([]byte(body), &got); code != http.StatusOK || err != nil {
		t.Fatalf("GET /stats = %d, %q, %v; want 200 and JSON", code, body, err)
	}
	want := webStats{Clients: 2, WebSocketClients: 1, Framing: "len32", MaxMessage: cfg.maxMessage}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GET /stats (-want +got):\n%s", diff)
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
	cfg.keepalive = 100 * time.Millisecond
	ts, url := startWeb(t, cfg)
	alice := dialWS(t, url, "alice", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	alice.CloseRead(ctx) // reads (and so answers pings) without expecting messages
	dialWS(t, url, "mute", nil)
	ts.waitClients(t, 2)
	var aliceSide *wsConn
	ts.mu.Lock()
	for c := range ts.conns {
		if c.id == 1 {
			aliceSide = c.conn.(*wsConn)
		}
	}
	ts.mu.Unlock()
	start := time.Now()
	waitCloses(t, ts, reasonReadError, 1)
	ts.waitClients(t, 1)
	// alice, idle all along, answers ping after ping and stays connected.
	waitFor(t, 5*time.Second, func() error {
		if seen := time.Unix(0, aliceSide.lastSeen.Load()); seen.Before(start.Add(5 * cfg.keepalive)) {
			return fmt.Errorf("alice last answered a ping %v after the start; want 5 keepalive periods", seen.Sub(start))
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
}

// frozenWS dials a WebSocket client that never reads, with a small receive
// buffer, as frozen does for TCP.
func frozenWS(t *testing.T, url string) *wsTestConn {
	t.Helper()
	d := net.Dialer{Timeout: ioTimeout, Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		rc.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return err
	}}
	hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	return dialWS(t, url, "slow", &websocket.DialOptions{HTTPClient: hc})
}

// readAllWS reads n messages from c, the lines from sent without '\n', and
// checks that they are whole and in order.
func readAllWS(t *testing.T, c *wsTestConn, from string, n, size int) {
	t.Helper()
	for i := range n {
		want := strings.TrimSuffix(line(from, i, size), "\n")
		if _, got, err := c.readWS(t); err != nil || got != want {
			t.Errorf("%s: message %d: %.20q, %v; want %.20q", c.name, i, got, err, want)
			return
		}
	}
}

// TestWebSlow follows the slow-client template with WebSocket clients: pub
// and alice (TCP) and bob (WebSocket) read everything, in order, while slow,
// a WebSocket client that never reads, is cut off (disconnect) or skipped
// for what it could not take (drop).
func TestWebSlow(t *testing.T) {
	for _, policy := range []slowPolicy{slowDisconnect, slowDrop} {
		t.Run(policy.String(), func(t *testing.T) {
			cfg := testWebConfig()
			cfg.slow = policy
			cfg.queue, cfg.maxPending = 64, 64<<10
			cfg.writeTimeout = time.Minute // so only the slow-client rule can act
			cfg.stallLimit = 2 * time.Second
			ts, url := startWeb(t, cfg)
			pub, alice := dial(t, ts.addr, "pub"), dial(t, ts.addr, "alice")
			bob := dialWS(t, url, "bob", nil)
			slow := frozenWS(t, url)
			ts.waitClients(t, 4)
			var sc *client
			// Tell slow from bob: bob sends one message.
			bob.sendWS(t, websocket.MessageText, "bob")
			for _, c := range []*testConn{pub, alice} {
				expectLine(t, c, "bob\n")
			}
			expectWS(t, bob, websocket.MessageText, "bob")
			ts.mu.Lock()
			for c := range ts.conns {
				if _, ok := c.conn.(*wsConn); ok && c.msgsIn.Load() == 0 {
					sc = c
				}
			}
			ts.mu.Unlock()

			const n = frozenFloodLines
			var wg sync.WaitGroup
			wg.Go(func() { publishLines(t, pub, n, frozenFloodSize) })
			wg.Go(func() { readAll(t, pub, "pub", n, frozenFloodSize) })
			wg.Go(func() { readAll(t, alice, "pub", n, frozenFloodSize) })
			wg.Go(func() { readAllWS(t, bob, "pub", n, frozenFloodSize) })
			wg.Wait()

			switch policy {
			case slowDisconnect:
				ts.waitClients(t, 3)
				waitCloses(t, ts, reasonSlowClient, 1)
				if !ts.logs.has(`"reason":"slow_client"`, `"transport":"ws"`, `"level":"warn"`) {
					t.Error("no warn log line for the slow WebSocket client")
				}
			case slowDrop:
				waitFor(t, 5*time.Second, func() error {
					if got := sc.msgsOut.Load() + uint64(sc.pendingMsgs.Load()) + sc.dropped.Load(); got != n+1 {
						return fmt.Errorf("slow: out+queued+dropped = %d; want %d", got, n+1)
					}
					return nil
				})
				dropped := sc.dropped.Load()
				if dropped == 0 {
					t.Fatalf("slow: dropped = 0; want some")
				}
				expectWS(t, slow, websocket.MessageText, "bob")
				prev := -1
				for range n - int(dropped) {
					_, msg, err := slow.readWS(t)
					var i int
					if _, serr := fmt.Sscanf(msg, "pub %d ", &i); err != nil || serr != nil || i <= prev {
						t.Fatalf("slow: %.20q, %v after line %d; want a later line", msg, err, prev)
					}
					prev = i
				}
				ts.waitClients(t, 4)
			}
		})
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

// TestWebFrameSizes: messages at each boundary of the WebSocket length
// encoding (7, 16 and 64 bits) cross both ways intact.
func TestWebFrameSizes(t *testing.T) {
	cfg := testWebConfig()
	cfg.framing, cfg.maxMessage, cfg.maxPending = framingLen32, 1<<20, 8<<20
	ts, url := startWeb(t, cfg)
	alice := dial(t, ts.addr, "alice")
	bob := dialWS(t, url, "bob", nil)
	ts.waitClients(t, 2)
	for _, size := range []int{0, 125, 126, 65535, 65536, 300000} {
		payload := strings.Repeat(string(rune('a'+size%26)), size)
		alice.send(t, len32(payload))
		expectWS(t, bob, websocket.MessageBinary, payload)
		if got := readN(t, alice, len32Header+size); got != len32(payload) {
			t.Fatalf("alice: own %d-byte frame came back different", size)
		}
		bob.sendWS(t, websocket.MessageBinary, payload)
		if got := readN(t, alice, len32Header+size); got != len32(payload) {
			t.Fatalf("alice: bob's %d-byte message arrived different", size)
		}
		expectWS(t, bob, websocket.MessageBinary, payload)
	}
}

// TestWebEarlyFrame: a frame sent in the same packet as the upgrade request,
// before the response, is not lost when the connection is hijacked.
func TestWebEarlyFrame(t *testing.T) {
	ts, url := startWeb(t, testWebConfig())
	alice := dial(t, ts.addr, "alice")
	ts.waitClients(t, 1)
	host := strings.TrimSuffix(strings.TrimPrefix(url, "ws://"), "/ws")
	early := dial(t, host, "early")
	payload, mask := []byte("sent early"), [4]byte{1, 2, 3, 4}
	frame := append([]byte{0x81, 0x80 | byte(len(payload))}, mask[:]...) // a final, masked text frame
	for i, b := range payload {
		frame = append(frame, b^mask[i%4])
	}
	early.send(t, "GET /ws HTTP/1.1\r\nHost: "+host+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"+string(frame))
	if status := early.readLine(t); !strings.HasPrefix(status, "HTTP/1.1 101 ") {
		t.Fatalf("early: %q; want 101 Switching Protocols", status)
	}
	expectLine(t, alice, "sent early\n")
}
