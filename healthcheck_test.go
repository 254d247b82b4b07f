package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

func TestHealthURL(t *testing.T) {
	for _, tc := range []struct {
		name, listen, want string
	}{
		{"unset", "", defaultHealthURL},
		{"all IPv4 interfaces", "0.0.0.0:9090", "http://127.0.0.1:9090/healthz"},
		{"all IPv6 interfaces", "[::]:9191", "http://127.0.0.1:9191/healthz"},
		{"no host", ":9292", "http://127.0.0.1:9292/healthz"},
		{"host name", "localhost:9393", "http://localhost:9393/healthz"},
		{"IPv6 host", "[::1]:9494", "http://[::1]:9494/healthz"},
		{"no port", "nonsense", defaultHealthURL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := healthURL(tc.listen); got != tc.want {
				t.Errorf("healthURL(%q) = %q; want %q", tc.listen, got, tc.want)
			}
		})
	}
}

// TestRunHealthcheck runs `echohub healthcheck` in-process against a live
// server, a dead address and a non-2xx answer.
func TestRunHealthcheck(t *testing.T) {
	cfg := testConfig()
	cfg.metricsListen = "127.0.0.1:0"
	ts := startTestServer(t, cfg)
	base := startTestAPI(t, ts)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + dead.Addr().String() + "/healthz"
	dead.Close()

	for _, tc := range []struct {
		name string
		args []string
		env  string // ECHOHUB_METRICS_LISTEN
		code int
		want string // the one stderr line, if code is 1
	}{
		{"live", []string{"--url", base + "/healthz"}, "", 0, ""},
		{"from env", nil, "0.0.0.0:" + strings.TrimPrefix(base, "http://127.0.0.1:"), 0, ""},
		{"url wins over env", []string{"--url", base + "/healthz"}, "127.0.0.1:1", 0, ""},
		{"dead", []string{"--url", deadURL}, "", 1, `echohub: healthcheck: Get "` + deadURL + `": dial tcp ` + dead.Addr().String() + ": connect: connection refused\n"},
		{"not 2xx", []string{"--url", base + "/nothing"}, "", 1, "echohub: healthcheck: GET " + base + "/nothing: 404 Not Found\n"},
		{"bad url", []string{"--url", "::"}, "", 1, `echohub: healthcheck: --url: parse "::": missing protocol scheme` + "\n"},
		{"stray argument", []string{"now"}, "", 1, "echohub: healthcheck: unexpected argument \"now\"\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("ECHOHUB_METRICS_LISTEN", tc.env)
			code, stdout, stderr := runCLI(context.Background(), "", append([]string{"healthcheck"}, tc.args...)...)
			if code != tc.code || stdout != "" || stderr != tc.want {
				t.Errorf("run(healthcheck %q) = %d, %q, %q; want %d, no output, %q", tc.args, code, stdout, stderr, tc.code, tc.want)
			}
		})
	}
}

// TestRunHealthcheckTimeout: a server that accepts but never answers, as a
// hung process would, fails the probe after healthcheckTimeout.
func TestRunHealthcheckTimeout(t *testing.T) {
	hung, err := net.Listen("tcp", "127.0.0.1:0") // the kernel accepts; nobody answers
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	start := time.Now()
	code, _, stderr := runCLI(context.Background(), "", "healthcheck", "--url", "http://"+hung.Addr().String()+"/healthz")
	if d := time.Since(start); d < healthcheckTimeout || d > 3*healthcheckTimeout {
		t.Errorf("healthcheck took %v; want about %v", d, healthcheckTimeout)
	}
	if code != 1 || !strings.HasPrefix(stderr, "echohub: healthcheck: ") || strings.Count(stderr, "\n") != 1 ||
		!strings.Contains(stderr, "Client.Timeout exceeded") {
		t.Errorf("run(healthcheck hung) = %d, %q; want 1 and one line saying the timeout was exceeded", code, stderr)
	}
}
