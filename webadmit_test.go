package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

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

// TestWebRate: --rate slows a WebSocket publisher as it does a TCP one (by
// not reading from it), without disconnecting it.
func TestWebRate(t *testing.T) {
	cfg := testWebConfig()
	cfg.rate, cfg.burst = 50, 5
	ts, url := startWeb(t, cfg)
	alice := dial(t, ts.addr, "alice")
	flood := dialWS(t, url, "flood", nil)
	ts.waitClients(t, 2)
	const n = 100
	start := time.Now()
	for i := range n {
		flood.sendWS(t, websocket.MessageText, strings.TrimSuffix(line("flood", i, 32), "\n"))
	}
	for i := range n {
		expectLine(t, alice, line("flood", i, 32))
	}
	// 100 messages at 50/s after a burst of 5 take about 1.9 s.
	if d := time.Since(start); d < time.Second {
		t.Errorf("100 messages at --rate 50 arrived in %v; want them slowed to about 2s", d)
	}
	if ts.m.rateLimited.Load() == 0 {
		t.Error("rate limited = 0; want flood's delayed messages counted")
	}
	if got := ts.m.clients.Load(); got != 2 {
		t.Errorf("clients = %d; want 2: nobody is disconnected", got)
	}
}
