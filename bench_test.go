package main

import (
	"context"
	"encoding/json"
	"testing"
)

// TestBenchFlags: every bad flag of `echohub bench` fails with one line that
// names it, worded as serve's are, before anything is dialled.
func TestBenchFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // the one stderr line, after "echohub: "
	}{
		{"size below header", []string{"--size", "40"}, "--size: 40 is out of range (want at least 41 with line framing, to hold the message header)"},
		{"len32 size below header", []string{"--framing", "len32", "--size", "39"}, "--size: 39 is out of range (want at least 40 with len32 framing, to hold the message header)"},
		{"size too large", []string{"--size", "2000000"}, "--size: 2000000 is out of range (want at most 1048576)"},
		{"framing", []string{"--framing", "raw"}, `--framing: unknown value "raw" (want line, len32)`},
		{"subs", []string{"--subs", "0"}, "--subs: 0 is out of range (want at least 1)"},
		{"pubs", []string{"--pubs", "0"}, "--pubs: 0 is out of range (1 to 65536)"},
		{"rate", []string{"--rate", "-1"}, "--rate: -1 is out of range (want 0 for as fast as the hub accepts, or up to 1e9 msgs/s)"},
		{"duration", []string{"--duration", "0s"}, "--duration: 0s is out of range (want more than 0)"},
		{"warmup", []string{"--warmup", "-1s"}, "--warmup: -1s is out of range (want 0 or more)"},
		{"addr", []string{"--addr", "localhost"}, "--addr: address localhost: missing port in address"},
		{"addr scheme", []string{"--addr", "http://127.0.0.1:80"}, `--addr: unknown scheme "http" in "http://127.0.0.1:80" (want redis, rediss, nats, tls, ws, wss, or HOST:PORT for a TCP hub)`},
		{"addr mixed", []string{"--addr", "127.0.0.1:7000,nats://127.0.0.1:4222"}, "--addr: mixes tcp and nats addresses"},
		{"ws with redis", []string{"--ws", "--addr", "redis://127.0.0.1:6379"}, `--ws: needs HOST:PORT or ws:// addresses, got "redis://127.0.0.1:6379"`},
		{"slo", []string{"--find-max", "--slo", "0s"}, "--slo: 0s is out of range (want more than 0)"},
		{"tls flag without tls", []string{"--tls-insecure"}, "--tls-insecure: needs --tls"},
		{"missing ca", []string{"--tls", "--tls-ca", "/nonexistent/ca.pem"}, "--tls-ca /nonexistent/ca.pem: no such file or directory"},
		{"cert without key", []string{"--tls", "--tls-cert", "cert.pem"}, "--tls-cert cert.pem: no --tls-key given (want both or neither)"},
		{"argument", []string{"extra"}, `bench: unexpected argument "extra"`},
		{"unknown flag", []string{"--colour"}, "bench: flag provided but not defined: -colour"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(context.Background(), "", append([]string{"bench"}, tt.args...)...)
			if want := "echohub: " + tt.want + "\n"; code != 1 || stdout != "" || stderr != want {
				t.Errorf("echohub bench %v = %d, stdout %q, stderr %q; want 1, \"\", %q", tt.args, code, stdout, stderr, want)
			}
		})
	}
}

// TestBenchServe runs `echohub bench` against a real echohub server: the
// command's figures come back as JSON on stdout, with nothing lost, and
// nothing on stderr, since stderr is not a terminal. Given the server's
// address twice, as two nodes, it finds one order.
func TestBenchServe(t *testing.T) {
	ts := startTestServer(t, testConfig())
	code, stdout, stderr := runCLI(context.Background(), "", "bench", "--addr", ts.addr+","+ts.addr, "--subs", "3", "--pubs", "2",
		"--rate", "2000", "--duration", "500ms", "--warmup", "100ms", "--json")
	if code != 0 || stderr != "" {
		t.Fatalf("echohub bench = %d, stderr %q; want 0, \"\"", code, stderr)
	}
	var res struct {
		Addr       string `json:"addr"`
		Subs       int    `json:"subs"`
		Published  int64  `json:"published"`
		Expected   int64  `json:"expected_deliveries"`
		Received   int64  `json:"received_deliveries"`
		Lost       int64  `json:"lost"`
		Reordered  int64  `json:"reordered"`
		Duplicates int64  `json:"duplicates"`
		Gone       int    `json:"disconnected_subs"`
		Nodes      int    `json:"nodes"`
		Divergent  int    `json:"divergent_subs"`
		Checked    int64  `json:"order_checked"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("echohub bench --json printed %q: %v", stdout, err)
	}
	if res.Addr != ts.addr+","+ts.addr || res.Nodes != 2 || res.Divergent != 0 || res.Checked != res.Published || res.Subs != 3 || res.Published < 1000 || res.Expected != 3*res.Published ||
		res.Received != res.Expected || res.Lost != 0 || res.Reordered != 0 || res.Duplicates != 0 || res.Gone != 0 {
		t.Errorf("echohub bench --json = %s; want 3 subscribers on 2 nodes receiving every message of at least 1000, in one order", stdout)
	}
}
