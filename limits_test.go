package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"
	"go.uber.org/goleak"
)

func TestParsePrefixes(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		want []string
	}{
		{"none", nil, nil},
		{"cidrs", []string{"10.0.0.0/8", "fd00::/8"}, []string{"10.0.0.0/8", "fd00::/8"}},
		{"plain addresses", []string{"192.0.2.7", "2001:db8::1"}, []string{"192.0.2.7/32", "2001:db8::1/128"}},
		{"host bits cleared", []string{"10.1.2.3/8"}, []string{"10.0.0.0/8"}},
		{"spaces from env", []string{" 10.0.0.0/8 "}, []string{"10.0.0.0/8"}},
		{"4-in-6 prefix unmapped", []string{"::ffff:10.0.0.0/104"}, []string{"10.0.0.0/8"}},
		{"4-in-6 address unmapped", []string{"::ffff:192.0.2.7"}, []string{"192.0.2.7/32"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parsePrefixes(tc.in)
			if err != nil {
				t.Fatalf("parsePrefixes(%q) = %v; want no error", tc.in, err)
			}
			var gotS []string
			for _, p := range got {
				gotS = append(gotS, p.String())
			}
			if diff := cmp.Diff(tc.want, gotS); diff != "" {
				t.Errorf("parsePrefixes(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
	for _, bad := range []string{"nonsense", "10.0.0.0/33", "10.0.0/8", "fe80::1%eth0", "2001:db8::/129"} {
		if _, err := parsePrefixes([]string{"10.0.0.0/8", bad}); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("invalid CIDR %q", bad)) {
			t.Errorf("parsePrefixes(%q) = %v; want an error naming the value", bad, err)
		}
	}
	// An allow list left empty by mistake must not admit everyone.
	if _, err := parsePrefixes([]string{" "}); err == nil || !strings.Contains(err.Error(), "empty CIDR") {
		t.Errorf(`parsePrefixes(" ") = %v; want an empty CIDR error`, err)
	}
}

func TestConfigAdmits(t *testing.T) {
	for _, tc := range []struct {
		name        string
		allow, deny []string
		admitted    []string
		refused     []string
	}{
		{"everyone by default", nil, nil, []string{"127.0.0.1", "192.0.2.1", "::1"}, nil},
		{"allow only", []string{"127.0.0.0/8"}, nil, []string{"127.0.0.1", "127.0.0.2"}, []string{"192.0.2.1", "::1"}},
		{"deny wins over allow", []string{"127.0.0.0/8"}, []string{"127.0.0.2/32"}, []string{"127.0.0.1"}, []string{"127.0.0.2", "10.0.0.1"}},
		{"deny only", nil, []string{"10.0.0.0/8", "2001:db8::/32"}, []string{"127.0.0.1", "::1"}, []string{"10.9.9.9", "2001:db8::5"}},
		{"ipv6", []string{"::1"}, nil, []string{"::1"}, []string{"127.0.0.1", "::2"}},
		{"invalid address refused by any allow", []string{"0.0.0.0/0"}, nil, nil, []string{"invalid IP"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg config
			var err error
			if cfg.allow, err = parsePrefixes(tc.allow); err != nil {
				t.Fatal(err)
			}
			if cfg.deny, err = parsePrefixes(tc.deny); err != nil {
				t.Fatal(err)
			}
			for _, want := range []bool{true, false} {
				list := tc.admitted
				if !want {
					list = tc.refused
				}
				for _, s := range list {
					ip, _ := netip.ParseAddr(s) // the zero Addr for "invalid IP"
					if got := cfg.admits(ip); got != want {
						t.Errorf("admits(%s) with --allow %q --deny %q = %v; want %v", ip, tc.allow, tc.deny, got, want)
					}
				}
			}
		})
	}
}

func TestRemoteIPUnmapped(t *testing.T) {
	ln, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Skipf("no dual-stack listener: %v", err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Skipf("no IPv4 on a dual-stack listener: %v", err)
	}
	defer c.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	// A dual-stack listener sees ::ffff:127.0.0.1; --allow 127.0.0.1 must match it.
	if got, want := remoteIP(sc), netip.MustParseAddr("127.0.0.1"); got != want {
		t.Errorf("remoteIP(conn from %s) = %v; want %v", sc.RemoteAddr(), got, want)
	}
}

// TestLimitsConfigFromEnv: ECHOHUB_ALLOW and ECHOHUB_DENY take
// comma-separated lists, and a --burst of 0 stays 0 (one second's worth).
func TestLimitsConfigFromEnv(t *testing.T) {
	t.Setenv("ECHOHUB_ALLOW", "127.0.0.0/8, 10.0.0.1")
	t.Setenv("ECHOHUB_DENY", "127.0.0.2")
	t.Setenv("ECHOHUB_RATE", "2.5")
	t.Setenv("ECHOHUB_KEEPALIVE", "0s")
	var cfg config
	app := &cli.App{Flags: serveFlags(), Action: func(cCtx *cli.Context) (err error) {
		cfg, err = configFromCLI(cCtx)
		return err
	}}
	if err := app.Run([]string{"echohub", "--max-clients-per-ip", "3"}); err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.1/32")}
	if !slices.Equal(cfg.allow, want) || !slices.Equal(cfg.deny, []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}) {
		t.Errorf("allow, deny = %v, %v; want %v, [127.0.0.2/32]", cfg.allow, cfg.deny, want)
	}
	if cfg.maxClientsPerIP != 3 || cfg.rate != 2.5 || cfg.burst != 0 || cfg.keepalive != 0 {
		t.Errorf("max-clients-per-ip, rate, burst, keepalive = %d, %v, %d, %v; want 3, 2.5, 0, 0s",
			cfg.maxClientsPerIP, cfg.rate, cfg.burst, cfg.keepalive)
	}
	if in := newIngress(cfg); in == nil || in.burst != 3 {
		t.Errorf("newIngress(rate 2.5, burst 0) = %+v; want a burst of 3, one second's worth", in)
	}
	if in := newIngress(defaultConfig()); in != nil {
		t.Errorf("newIngress(rate 0) = %+v; want nil, no limiter", in)
	}
}

// TestLimitsAllowDeny dials from 127.0.0.1 and 127.0.0.2: a refused client
// gets one notice line and EOF, the admitted one is served.
func TestLimitsAllowDeny(t *testing.T) {
	for _, tc := range []struct {
		name        string
		allow, deny []string
	}{
		{"deny wins over allow", []string{"127.0.0.0/8"}, []string{"127.0.0.2/32"}},
		{"allow one address", []string{"127.0.0.1/32"}, nil},
		{"deny one address", nil, []string{"127.0.0.2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.allow, _ = parsePrefixes(tc.allow)
			cfg.deny, _ = parsePrefixes(tc.deny)
			ts := startTestServer(t, cfg)
			alice := dialFrom(t, ts.addr, "alice", "127.0.0.1")
			ts.waitClients(t, 1)

			mallory := dialFrom(t, ts.addr, "mallory", "127.0.0.2")
			expectLine(t, mallory, "echohub: not allowed from 127.0.0.2; closing\n")
			expectClosed(t, mallory)
			if got := ts.closes(reasonDenied); got != 1 {
				t.Errorf("closes{denied} = %d; want 1", got)
			}
			if !ts.logs.has(`"level":"warn"`, `"reason":"denied"`, `"remote":"127.0.0.2:`, `"client refused"`) {
				t.Errorf("no warn log line for the refusal")
			}
			alice.send(t, "still served\n")
			expectLine(t, alice, "still served\n")
			ts.waitClients(t, 1)
		})
	}
}

// TestLimitsPerIP: with --max-clients-per-ip 2 the third client from
// 127.0.0.1 is refused while 127.0.0.2 still gets in, and a freed slot can
// be taken again.
func TestLimitsPerIP(t *testing.T) {
	cfg := testConfig()
	cfg.maxClientsPerIP = 2
	ts := startTestServer(t, cfg)
	alice, bob := dialFrom(t, ts.addr, "alice", "127.0.0.1"), dialFrom(t, ts.addr, "bob", "127.0.0.1")
	ts.waitClients(t, 2)

	carol := dialFrom(t, ts.addr, "carol", "127.0.0.1")
	expectLine(t, carol, "echohub: too many connections from 127.0.0.1 (max 2); closing\n")
	expectClosed(t, carol)
	dave := dialFrom(t, ts.addr, "dave", "127.0.0.2")
	ts.waitClients(t, 3)
	if got := ts.closes(reasonTooManyFromIP); got != 1 {
		t.Errorf("closes{too_many_from_ip} = %d; want 1", got)
	}

	bob.Close()
	waitFor(t, 5*time.Second, func() error {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		if n := ts.perIP[netip.MustParseAddr("127.0.0.1")]; n != 1 {
			return fmt.Errorf("connections from 127.0.0.1 = %d; want 1", n)
		}
		return nil
	})
	erin := dialFrom(t, ts.addr, "erin", "127.0.0.1")
	ts.waitClients(t, 3)
	dave.send(t, "welcome erin\n")
	for _, c := range []*testConn{alice, dave, erin} {
		expectLine(t, c, "welcome erin\n")
	}
	if got := ts.closes(reasonTooManyFromIP); got != 1 {
		t.Errorf("closes{too_many_from_ip} = %d; want still 1", got)
	}
	alice.Close()
	dave.Close()
	erin.Close()
	waitFor(t, 5*time.Second, func() error {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		if len(ts.perIP) != 0 {
			return fmt.Errorf("per-IP counts = %v; want none once everyone left", ts.perIP)
		}
		return nil
	})
}

// TestLimitsRate: a flooder over --rate is slowed to about the rate, not
// disconnected, while another client's line goes through at once.
func TestLimitsRate(t *testing.T) {
	cfg := testConfig()
	cfg.rate, cfg.burst = 50, 5
	ts := startTestServer(t, cfg)
	flood, bob, alice := dial(t, ts.addr, "flood"), dial(t, ts.addr, "bob"), dial(t, ts.addr, "alice")
	ts.waitClients(t, 3)

	const n, size = 200, 64
	publishLines(t, flood, n, size) // 13 KB: the socket buffers take it all
	expectLine(t, alice, line("flood", 0, size))
	start := time.Now()

	// bob speaks while flood is throttled: his line is not queued behind
	// flood's backlog, which waits in flood's own socket.
	time.Sleep(200 * time.Millisecond)
	bob.send(t, "bob is heard\n")
	sent := time.Now()
	got := 1 // flood's lines alice has read
	for {
		l := alice.readLine(t)
		if l == "bob is heard\n" {
			break
		}
		if want := line("flood", got, size); l != want {
			t.Fatalf("alice: read %q; want %q", l, want)
		}
		got++
	}
	if d := time.Since(sent); d > time.Second {
		t.Errorf("bob's line took %v to reach alice; want well under 1s", d)
	}

	// After a second, no more than the burst and about a second's worth.
	time.Sleep(time.Until(start.Add(time.Second)))
	elapsed := time.Since(start)
	for {
		alice.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		l, err := alice.r.ReadString('\n')
		if err != nil {
			break
		}
		if want := line("flood", got, size); l != want {
			t.Fatalf("alice: read %q; want %q", l, want)
		}
		got++
	}
	limit := cfg.burst + int(cfg.rate*1.5*elapsed.Seconds())
	t.Logf("flood: %d of %d lines delivered after %v at --rate %v --burst %d", got, n, elapsed.Round(time.Millisecond), cfg.rate, cfg.burst)
	if got > limit || got >= n {
		t.Errorf("flood: %d lines delivered after %v; want at most %d, the burst and 1.5 times the rate", got, elapsed, limit)
	}
	if got < 10 {
		t.Errorf("flood: %d lines delivered after %v; want it slowed, not stopped", got, elapsed)
	}
	if ts.m.rateLimited.Load() == 0 {
		t.Errorf("rate limited = 0; want flood's delayed messages counted")
	}
	var closes uint64
	for r := range numCloseReasons {
		closes += ts.closes(r)
	}
	if closes != 0 || ts.m.clients.Load() != 3 {
		t.Errorf("closes = %d, clients = %d; want 0 and 3: nobody is disconnected", closes, ts.m.clients.Load())
	}
}

// TestLimitsRateClose: closing a client whose reader waits for tokens ends
// the wait at once, not when the tokens come.
func TestLimitsRateClose(t *testing.T) {
	cfg := testConfig()
	cfg.rate, cfg.burst = 0.1, 1 // a wait of 10s per message
	cfg.excludeSender = true     // so flood reads nothing before its EOF
	ts := startTestServer(t, cfg)
	flood, alice := dial(t, ts.addr, "flood"), dial(t, ts.addr, "alice")
	ts.waitClients(t, 2)
	flood.send(t, "one\ntwo\n")
	expectLine(t, alice, "one\n")
	waitThrottled(t, ts.m)

	start := time.Now()
	ts.serverSide(t, flood).close(reasonSlowClient)
	ts.waitClients(t, 1)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("closing a throttled client took %v; want well under its 10s wait", d)
	}
	expectClosed(t, flood)
	waitFor(t, 5*time.Second, func() error {
		if got := ts.closes(reasonSlowClient); got != 1 {
			return fmt.Errorf("closes{slow_client} = %d; want 1", got)
		}
		return nil
	})
}

// TestLimitsRateShutdown: shutdown while a reader waits for tokens finishes
// promptly, and the messages that reader had read are still delivered.
func TestLimitsRateShutdown(t *testing.T) {
	defer goleak.VerifyNone(t)
	cfg := testConfig()
	cfg.rate, cfg.burst = 0.5, 1 // a wait of 2s per message
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel))
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	ts := asTestServer(s)
	flood, alice := dial(t, ln.Addr().String(), "flood"), dial(t, ln.Addr().String(), "alice")
	ts.waitClients(t, 2)
	flood.send(t, "one\ntwo\nthree\n")
	expectLine(t, alice, "one\n")
	waitThrottled(t, s.m)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown() = %v; want nil", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Shutdown took %v; want well under the 2s a token takes", d)
	}
	if err := <-served; !errors.Is(err, errServerClosed) {
		t.Errorf("Serve() = %v; want errServerClosed", err)
	}
	// Every line the server read reaches alice, then EOF.
	for i := uint64(1); i < s.m.messagesReceived.Load(); i++ {
		alice.readLine(t)
	}
	expectClosed(t, alice)
	flood.Close()
	alice.Close()
}

// TestLimitsFairness: one client floods as fast as it can while nine send
// 100 msg/s each; under --rate the nine's messages still reach every reader
// promptly. The bound is generous (-race, a busy 2-core machine);
// BenchmarkFairness measures the real p99, and the hub alone (no --rate),
// whose latency is the flood's backlog in buffers and queues (docs/performance.md).
func TestLimitsFairness(t *testing.T) {
	cfg := fairnessConfig()
	cfg.rate = 1000 // ten times the nine's rate
	rig := startFairness(t, cfg)
	tick := time.NewTicker(fairnessTick)
	defer tick.Stop()
	for range 100 { // a second of 100 msg/s
		<-tick.C
		rig.round(t)
	}
	res := rig.finish(t)
	t.Logf("--rate %v: %s", cfg.rate, res)
	if res.p99 > 500*time.Millisecond {
		t.Errorf("p99 latency of the nine = %v; want under 500ms (50ms without -race)", res.p99)
	}
	if res.closes != 0 {
		t.Errorf("closes = %d; want 0: nobody is disconnected", res.closes)
	}
}

// waitThrottled waits until a reader is held back by --rate: flood's.
func waitThrottled(t *testing.T, m *metrics) {
	t.Helper()
	waitFor(t, 5*time.Second, func() error {
		if m.rateLimited.Load() == 0 {
			return errors.New("flood's reader is not waiting yet")
		}
		return nil
	})
}
