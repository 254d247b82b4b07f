package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// apiGet is one raw GET of path on a kept-alive HTTP/1.1 connection.
func apiGet(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: echohub\r\n\r\n"
}

// expectAPIClosed checks that the server closes conn within within,
// having sent it nothing, or only a complete answer read before.
func expectAPIClosed(t *testing.T, conn net.Conn, within time.Duration) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(within))
	n, err := conn.Read(make([]byte, 1))
	switch {
	case n > 0:
		t.Fatalf("read %d bytes; want the connection closed", n)
	case errors.Is(err, io.EOF), isReset(err):
	default:
		t.Fatalf("read: %v; want EOF within %v", err, within)
	}
}

// retainedHeap returns the least of three heap samples, each taken after a
// GC. A GC counts as live whatever is allocated while it marks, so one
// sample can include the garbage of handlers busy at that moment; what a
// blocked handler holds shows in all three.
func retainedHeap() uint64 {
	h := memNow().heap
	for range 2 {
		h = min(h, memNow().heap)
	}
	return h
}

// TestHTTPAPIClientsUnread: 200 /clients requests whose peers never read,
// with 2000 clients connected, leave the process's heap within a few MB
// (once, RSS went from 38 to 690 MB and stayed there), and every one of them
// is cut off by the write timeout.
func TestHTTPAPIClientsUnread(t *testing.T) {
	const hubClients, requests = 2000, 200
	// While answering, a sample may still hold some garbage of handlers
	// encoding at that moment (see retainedHeap): up to 3.3 MB was seen.
	// The whole answers, built at once, took 140 MB.
	const maxGrowth = 8 << 20
	cfg := testConfig()
	cfg.logLevel = zerolog.InfoLevel
	cfg.metricsListen = "127.0.0.1:0"
	cfg.api.writeTimeout = 300 * time.Millisecond
	ts := startTestServer(t, cfg)
	base := startTestAPI(t, ts)
	for range hubClients {
		c, err := net.DialTimeout("tcp", ts.addr, ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	ts.waitClients(t, hubClients)

	before := retainedHeap()
	apiAddr := strings.TrimPrefix(base, "http://")
	for range requests {
		c := dialUnread(t, apiAddr)
		c.SetWriteDeadline(time.Now().Add(ioTimeout))
		if _, err := io.WriteString(c, apiGet(fmt.Sprintf("/clients?limit=%d", clientsMaxLimit))); err != nil {
			t.Fatal(err)
		}
	}
	var peak uint64
	waitFor(t, 60*time.Second, func() error {
		if peak = max(peak, retainedHeap()); peak > before+maxGrowth {
			t.Fatalf("heap grew by %.1f MB while answering; want at most %d MB", float64(peak-before)/(1<<20), maxGrowth>>20)
		}
		if got, open := ts.m.apiAccepted.Load(), ts.m.apiConns.Load(); got != requests || open != 0 {
			return fmt.Errorf("API connections: %d accepted, %d open; want %d, none open (cut off by the write timeout)", got, open, requests)
		}
		return nil
	})
	after := retainedHeap()
	t.Logf("heap: %.1f MB before, %.1f MB at most while answering, %.1f MB after",
		float64(before)/(1<<20), float64(peak)/(1<<20), float64(after)/(1<<20))
	if after > before+1<<20 {
		t.Errorf("heap after = %.1f MB over before; want it back within 1 MB", float64(after-before)/(1<<20))
	}
}

// TestHTTPAPIIdleTimeout: a connection that sends no request is closed
// after the header timeout, and a kept-alive one after the idle timeout, so
// that idle connections cannot hold the process's file descriptors.
func TestHTTPAPIIdleTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.metricsListen = "127.0.0.1:0"
	cfg.api.readHeaderTimeout = 200 * time.Millisecond
	cfg.api.idleTimeout = 300 * time.Millisecond
	ts := startTestServer(t, cfg)
	apiAddr := strings.TrimPrefix(startTestAPI(t, ts), "http://")

	silent := dialUnread(t, apiAddr)
	start := time.Now()
	expectAPIClosed(t, silent, 5*time.Second)
	if d := time.Since(start); d < cfg.api.readHeaderTimeout/2 {
		t.Errorf("silent connection closed after %v; want about %v", d, cfg.api.readHeaderTimeout)
	}

	kept := dialUnread(t, apiAddr)
	kept.SetDeadline(time.Now().Add(ioTimeout))
	io.WriteString(kept, apiGet("/healthz"))
	resp, err := http.ReadResponse(bufio.NewReader(kept), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" || resp.Close {
		t.Fatalf("GET /healthz = %d, %q, close %v; want 200, %q on a kept-alive connection", resp.StatusCode, body, resp.Close, "ok\n")
	}
	start = time.Now()
	expectAPIClosed(t, kept, 5*time.Second)
	if d := time.Since(start); d < cfg.api.idleTimeout/2 {
		t.Errorf("idle connection closed after %v; want about %v", d, cfg.api.idleTimeout)
	}
	waitFor(t, 5*time.Second, func() error {
		if open := ts.m.apiConns.Load(); open != 0 {
			return fmt.Errorf("API connections open = %d; want 0", open)
		}
		return nil
	})
}

// TestHTTPAPIConnCap: past the cap, a new connection is not served until
// one of those open closes, and no more than the cap are ever open.
func TestHTTPAPIConnCap(t *testing.T) {
	const limit = 4
	cfg := testConfig()
	cfg.metricsListen = "127.0.0.1:0"
	cfg.api.maxConns = limit
	ts := startTestServer(t, cfg)
	apiAddr := strings.TrimPrefix(startTestAPI(t, ts), "http://")

	held := make([]net.Conn, limit)
	for i := range held {
		held[i] = dialUnread(t, apiAddr)
	}
	waitFor(t, 5*time.Second, func() error {
		if open := ts.m.apiConns.Load(); open != limit {
			return fmt.Errorf("API connections open = %d; want %d", open, limit)
		}
		return nil
	})
	late := dial(t, apiAddr, "late")
	late.send(t, apiGet("/healthz"))
	expectNothing(t, late, 200*time.Millisecond)
	if open, got := ts.m.apiConns.Load(), ts.m.apiAccepted.Load(); open != limit || got != limit {
		t.Errorf("API connections: %d open, %d accepted; want %d and %d, the cap", open, got, limit, limit)
	}

	held[0].Close()
	late.SetReadDeadline(time.Now().Add(ioTimeout))
	resp, err := http.ReadResponse(late.r, nil)
	if err != nil {
		t.Fatalf("late: %v; want an answer once a slot is free", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("late: GET /healthz = %d; want 200", resp.StatusCode)
	}
	if open := ts.m.apiConns.Load(); open > limit {
		t.Errorf("API connections open = %d; want at most %d", open, limit)
	}
}

// TestHTTPAPIClientsPages: /clients pages the connected clients by id with
// ?limit and ?after, lists addresses only with --clients-show-addr, and
// refuses a limit out of range.
func TestHTTPAPIClientsPages(t *testing.T) {
	for _, showAddr := range []bool{false, true} {
		t.Run(fmt.Sprintf("show-addr=%v", showAddr), func(t *testing.T) {
			cfg := testConfig()
			cfg.metricsListen, cfg.clientsShowAddr = "127.0.0.1:0", showAddr
			ts := startTestServer(t, cfg)
			base := startTestAPI(t, ts)
			const n = 5
			remotes := make(map[uint64]string)
			for i := range n {
				c := dial(t, ts.addr, fmt.Sprintf("c%d", i))
				remotes[ts.serverSide(t, c).id] = c.LocalAddr().String()
			}
			ts.waitClients(t, n)

			var got []uint64
			var after uint64
			for range n {
				page := getClientsPage(t, fmt.Sprintf("%s/clients?limit=2&after=%d", base, after))
				if len(page.Clients) > 2 {
					t.Fatalf("/clients?limit=2: %d rows", len(page.Clients))
				}
				for _, ci := range page.Clients {
					got = append(got, ci.ID)
					want := ""
					if showAddr {
						want = remotes[ci.ID]
					}
					if ci.Remote != want {
						t.Errorf("client %d: remote %q; want %q", ci.ID, ci.Remote, want)
					}
				}
				if after = page.NextAfter; after == 0 {
					break
				}
			}
			if len(got) != n {
				t.Fatalf("paged /clients: ids %v; want %d clients", got, n)
			}
			for i := 1; i < n; i++ {
				if got[i] <= got[i-1] {
					t.Errorf("paged /clients: ids %v; want increasing", got)
				}
			}
			for _, q := range []string{"limit=0", "limit=1001", "limit=x", "after=-1"} {
				if code, body := httpGet(t, base+"/clients?"+q); code != http.StatusBadRequest {
					t.Errorf("GET /clients?%s = %d, %q; want 400", q, code, body)
				}
			}
		})
	}
}

// TestHTTPAPIPprofProfile: a CPU profile longer than the API's write
// timeout is still written whole (pprof would refuse it, or the write timeout
// cut it off), and one longer than maxProfile is refused.
func TestHTTPAPIPprofProfile(t *testing.T) {
	cfg := testConfig()
	cfg.metricsListen, cfg.pprof = "127.0.0.1:0", true
	cfg.api.writeTimeout = 200 * time.Millisecond
	ts := startTestServer(t, cfg)
	base := startTestAPI(t, ts)
	if code, body := httpGet(t, base+"/debug/pprof/profile?seconds=1"); code != http.StatusOK || len(body) == 0 {
		t.Errorf("GET /debug/pprof/profile?seconds=1 = %d, %d bytes; want 200 and a profile", code, len(body))
	}
	if code, body := httpGet(t, base+"/debug/pprof/profile?seconds=301"); code != http.StatusBadRequest {
		t.Errorf("GET /debug/pprof/profile?seconds=301 = %d, %q; want 400", code, body)
	}
}
