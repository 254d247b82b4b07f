package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestHTTPAPIHealthz(t *testing.T) {
	cfg := testConfig()
	cfg.metricsListen = "127.0.0.1:0"
	ts := startTestServer(t, cfg)
	base := startTestAPI(t, ts)
	if code, body := httpGet(t, base+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("GET /healthz = %d, %q; want 200, %q", code, body, "ok\n")
	}
	waitFor(t, 5*time.Second, func() error {
		if code, body := httpGet(t, base+"/readyz"); code != http.StatusOK || body != "ok\n" {
			return fmt.Errorf("GET /readyz = %d, %q; want 200, %q", code, body, "ok\n")
		}
		return nil
	})
	if code, _ := httpGet(t, base+"/nothing"); code != http.StatusNotFound {
		t.Errorf("GET /nothing = %d; want 404", code)
	}
}

// TestHTTPAPIReadyzShutdown: /readyz answers 503 from the moment Shutdown
// begins, while the hub still drains a queue, and /healthz stays 200.
func TestHTTPAPIReadyzShutdown(t *testing.T) {
	cfg := testConfig()
	cfg.queue, cfg.maxPending = 100000, 64<<20 // slow is never cut off
	cfg.metricsListen = "127.0.0.1:0"
	ts := startTestServer(t, cfg)
	base := startTestAPI(t, ts)
	readyz := func(want int) func() error {
		return func() error {
			if code, body := httpGet(t, base+"/readyz"); code != want {
				return fmt.Errorf("GET /readyz = %d, %q; want %d", code, body, want)
			}
			return nil
		}
	}
	waitFor(t, 5*time.Second, readyz(http.StatusOK))

	// slow never reads, so its queue holds the drain open until it closes.
	pub, slow := dial(t, ts.addr, "pub"), frozen(t, ts.addr)
	ts.waitClients(t, 2)
	go io.Copy(io.Discard, pub)
	pub.send(t, strings.Repeat(strings.Repeat("z", 1023)+"\n", 1000)) // 1 MB
	sc := ts.serverSide(t, slow)
	waitFor(t, 10*time.Second, func() error {
		if sc.pendingMsgs.Load() == 0 {
			return fmt.Errorf("nothing queued for slow yet")
		}
		return nil
	})

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- ts.Shutdown(ctx)
	}()
	waitFor(t, 5*time.Second, readyz(http.StatusServiceUnavailable))
	if code, _ := httpGet(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("GET /healthz while draining = %d; want 200", code)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown() = %v while slow's queue was full; want it to wait", err)
	default:
	}
	if page := getClients(t, base); len(page.Clients) != 2 {
		t.Errorf("/clients while draining: %d clients; want 2", len(page.Clients))
	}

	slow.Close() // the drain can end
	if err := <-shut; err != nil {
		t.Errorf("Shutdown() = %v; want nil", err)
	}
	waitFor(t, 5*time.Second, readyz(http.StatusServiceUnavailable))
}

func TestHTTPAPIPprof(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pprof bool
		want  int
	}{
		{"off", false, http.StatusNotFound},
		{"on", true, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.metricsListen, cfg.pprof = "127.0.0.1:0", tc.pprof
			ts := startTestServer(t, cfg)
			base := startTestAPI(t, ts)
			for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine?debug=1"} {
				if code, _ := httpGet(t, base+path); code != tc.want {
					t.Errorf("GET %s with pprof=%v = %d; want %d", path, tc.pprof, code, tc.want)
				}
			}
		})
	}
}

// TestRunServeMetrics runs `echohub serve --metrics-listen` in-process: the
// HTTP API serves as long as the hub, and is closed when serve returns.
func TestRunServeMetrics(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := newPipeWriter(t)
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"echohub", "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
			"--log-format", "json"}, strings.NewReader(""), new(bytes.Buffer), stderr)
	}()
	addrs := stderr.logAddrs(t, "listening", "metrics listening")
	base := "http://" + addrs["metrics listening"]
	alice := dial(t, addrs["listening"], "alice")
	alice.send(t, "hi\n")
	expectLine(t, alice, "hi\n")
	waitFor(t, 5*time.Second, func() error {
		got, err := scrape(t, base)
		if err != nil {
			return err
		}
		if got["echohub_clients"] != 1 || got["echohub_messages_delivered_total"] != 1 {
			return fmt.Errorf("clients = %v, delivered = %v; want 1 and 1", got["echohub_clients"], got["echohub_messages_delivered_total"])
		}
		return nil
	})
	if code, _ := httpGet(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("GET /readyz = %d; want 200", code)
	}
	if code, _ := httpGet(t, base+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/ without --pprof = %d; want 404", code)
	}

	cancel()
	expectExit(t, done, 0)
	expectClosed(t, alice)
	if c, err := net.Dial("tcp", addrs["metrics listening"]); err == nil {
		c.Close()
		t.Errorf("dial %s after serve returned: connected; want the metrics listener closed", addrs["metrics listening"])
	}
}

// TestRunMetricsListenBusy: a busy --metrics-listen stops serve before it
// starts, with one line naming the flag, and the hub's listener is closed.
func TestRunMetricsListenBusy(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := free.Addr().String()
	free.Close()

	code, stdout, stderr := runCLI(context.Background(), "", "serve", "--listen", addr, "--metrics-listen", busy.Addr().String())
	want := "echohub: --metrics-listen: listen tcp " + busy.Addr().String() + ": bind: address already in use\n"
	if code != 1 || stdout != "" || stderr != want {
		t.Errorf("run(serve --metrics-listen busy) = %d, %q, %q; want 1, no output, %q", code, stdout, stderr, want)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on --listen %s again: %v; want it closed by the failed serve", addr, err)
	}
	ln.Close()
}
