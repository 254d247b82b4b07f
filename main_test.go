package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) {
		if built.dir != "" {
			os.RemoveAll(built.dir) // see buildBinary
		}
	}))
}

// runCLI runs the command line in-process and returns its exit code and output.
func runCLI(ctx context.Context, stdin string, args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(ctx, append([]string{"echohub"}, args...), strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestRunBadFlags(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string // the one stderr line must contain this
	}{
		{"framing", []string{"--framing", "xml"}, nil, `--framing: unknown value "xml"`},
		{"slow", []string{"--slow", "maybe"}, nil, `--slow: unknown value "maybe"`},
		{"log format", []string{"--log-format", "xml"}, nil, `--log-format: unknown value "xml"`},
		{"log level", []string{"--log-level", "loud"}, nil, `--log-level: unknown value "loud"`},
		{"negative queue", []string{"--queue", "-1"}, nil, "--queue: -1 is out of range"},
		{"negative max message", []string{"--max-message", "-5"}, nil, `--max-message: invalid size "-5"`},
		{"negative max pending", []string{"--max-pending", "-1"}, nil, `--max-pending: invalid size "-1"`},
		{"pending under message", []string{"--max-pending", "1KiB"}, nil, "--max-pending: 1024 is less than one largest message"},
		{"max message past 1GiB", []string{"--max-message", "2GiB"}, nil, `--max-message: invalid size "2GiB" (want a number of bytes, optionally with KiB, MiB or GiB, up to 1GiB)`},
		{"len32 max message past a 1GiB frame", []string{"--framing", "len32", "--max-message", "1GiB", "--max-pending", "1GiB"}, nil,
			"--max-message: 1073741824 is out of range for --framing len32 (1 to 1073741820; a frame is at most 1GiB)"},
		{"max pending past 1GiB", nil, map[string]string{"ECHOHUB_MAX_PENDING": "1073741825"}, `--max-pending: invalid size "1073741825"`},
		{"queue past int32", nil, map[string]string{"ECHOHUB_QUEUE": "2147483648"}, "--queue: 2147483648 is out of range (1 to 2147483647)"},
		{"max clients past int32", []string{"--max-clients", "4294967296"}, nil, "--max-clients: 4294967296 is out of range (0 for unlimited, or 1 to 2147483647)"},
		{"negative max clients", []string{"--max-clients", "-1"}, nil, "--max-clients: -1 is out of range"},
		{"zero write timeout", []string{"--write-timeout", "0s"}, nil, "--write-timeout: 0s is out of range"},
		{"unparsable duration", []string{"--write-timeout", "soon"}, nil, "write-timeout"},
		{"unparsable listen", []string{"--listen", "nonsense"}, nil, "--listen: listen tcp: address nonsense"},
		{"busy listen", []string{"--listen", busy.Addr().String()}, nil, "--listen: listen tcp " + busy.Addr().String() + ": bind: address already in use"},
		{"unparsable metrics listen", []string{"--listen", "127.0.0.1:0", "--metrics-listen", "nonsense"}, nil, "--metrics-listen: listen tcp: address nonsense"},
		{"busy metrics listen", []string{"--listen", "127.0.0.1:0", "--metrics-listen", busy.Addr().String()}, nil, "--metrics-listen: listen tcp " + busy.Addr().String() + ": bind: address already in use"},
		{"pprof without metrics", []string{"--pprof"}, nil, "--pprof: needs --metrics-listen"},
		{"clients-show-addr without metrics", []string{"--clients-show-addr"}, nil, "--clients-show-addr: needs --metrics-listen"},
		{"clients-show-addr env without metrics", nil, map[string]string{"ECHOHUB_CLIENTS_SHOW_ADDR": "true"}, "--clients-show-addr: needs --metrics-listen"},
		{"unknown flag", []string{"--colour"}, nil, "serve: flag provided but not defined: -colour"},
		{"stray argument", []string{"now"}, nil, `serve: unexpected argument "now"`},
		{"bad env", nil, map[string]string{"ECHOHUB_FRAMING": "xml"}, `--framing: unknown value "xml"`},
		{"bad env int", nil, map[string]string{"ECHOHUB_QUEUE": "many"}, "ECHOHUB_QUEUE"},
		{"unparsable allow", []string{"--allow", "10.0.0.0/33"}, nil, `--allow: invalid CIDR "10.0.0.0/33"`},
		{"unparsable deny", []string{"--deny", "127.0.0.1", "--deny", "localhost"}, nil, `--deny: invalid CIDR "localhost"`},
		{"bad env allow", nil, map[string]string{"ECHOHUB_ALLOW": "10.0.0.0/8,10.0.0.300"}, `--allow: invalid CIDR "10.0.0.300"`},
		{"empty env allow", nil, map[string]string{"ECHOHUB_ALLOW": ""}, "--allow: empty CIDR"},
		{"negative max clients per ip", []string{"--max-clients-per-ip", "-2"}, nil, "--max-clients-per-ip: -2 is out of range"},
		{"negative rate", []string{"--rate", "-0.5"}, nil, "--rate: -0.5 is out of range"},
		{"nan rate", []string{"--rate", "NaN"}, nil, "--rate: NaN is out of range"},
		{"unparsable rate", []string{"--rate", "fast"}, nil, "rate"},
		{"negative burst", []string{"--burst", "-1"}, nil, "--burst: -1 is out of range"},
		{"negative keepalive", []string{"--keepalive", "-1s"}, nil, "--keepalive: -1s is out of range"},
		{"zero stall limit", []string{"--stall-limit", "0s"}, nil, "--stall-limit: 0s is out of range"},
		{"zero stall pause", []string{"--stall-pause", "0s"}, nil, "--stall-pause: 0s is out of range"},
		{"stall pause past the limit", []string{"--stall-pause", "4s"}, nil, "--stall-pause: 4s is out of range (more than 0, up to --stall-limit 3s)"},
		{"huge spill buffer", []string{"--spill-buffer", "2GiB"}, nil, "--spill-buffer"},
		{"negative coalesce", []string{"--coalesce", "-1ms"}, nil, "--coalesce: -1ms is out of range (0 to 1s)"},
		{"long coalesce", nil, map[string]string{"ECHOHUB_COALESCE": "2s"}, "--coalesce: 2s is out of range (0 to 1s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			code, stdout, stderr := runCLI(context.Background(), "", append([]string{"serve"}, tc.args...)...)
			if code != 1 {
				t.Errorf("exit code = %d; want 1", code)
			}
			if stdout != "" {
				t.Errorf("stdout = %q; want nothing", stdout)
			}
			if !strings.HasPrefix(stderr, "echohub: ") || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr = %q; want one line \"echohub: ...%s...\"", stderr, tc.want)
			}
		})
	}
}

// TestRunBadTLSFlags: bad TLS flags or files fail with one line naming the
// flag and the file, before the listener opens (the address is taken, so a
// listen attempt would fail differently).
func TestRunBadTLSFlags(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	ca := newTestCA(t, "ca")
	srv, other := ca.issue(t, "server", true), ca.issue(t, "other", true)
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string // the one stderr line must contain this
	}{
		{"missing cert", []string{"--tls-cert", missing, "--tls-key", srv.keyFile}, nil,
			"--tls-cert " + missing + ": no such file or directory"},
		{"missing key", []string{"--tls-cert", srv.certFile, "--tls-key", missing}, nil,
			"--tls-key " + missing + ": no such file or directory"},
		{"unreadable cert", []string{"--tls-cert", dir, "--tls-key", srv.keyFile}, nil,
			"--tls-cert " + dir + ": is a directory"},
		{"key mismatch", []string{"--tls-cert", srv.certFile, "--tls-key", other.keyFile}, nil,
			"--tls-key " + other.keyFile + ": tls: private key does not match public key"},
		{"cert not pem", []string{"--tls-cert", garbage, "--tls-key", srv.keyFile}, nil,
			"--tls-cert " + garbage + ": no certificates found"},
		{"cert and key swapped", []string{"--tls-cert", srv.keyFile, "--tls-key", srv.certFile}, nil,
			"--tls-cert " + srv.keyFile + ": no certificates found"},
		{"ca without certificates", []string{"--tls-cert", srv.certFile, "--tls-key", srv.keyFile, "--tls-client-ca", srv.keyFile}, nil,
			"--tls-client-ca " + srv.keyFile + ": no certificates found"},
		{"missing ca", []string{"--tls-cert", srv.certFile, "--tls-key", srv.keyFile, "--tls-client-ca", missing}, nil,
			"--tls-client-ca " + missing + ": no such file or directory"},
		{"cert without key", []string{"--tls-cert", srv.certFile}, nil,
			"--tls-cert " + srv.certFile + ": no --tls-key given"},
		{"key without cert", []string{"--tls-key", srv.keyFile}, nil,
			"--tls-key " + srv.keyFile + ": no --tls-cert given"},
		{"ca without cert", []string{"--tls-client-ca", ca.certFile}, nil,
			"--tls-client-ca " + ca.certFile + ": needs --tls-cert and --tls-key"},
		{"zero handshake timeout", []string{"--handshake-timeout", "0s"}, nil,
			"--handshake-timeout: 0s is out of range"},
		{"env key mismatch", nil, map[string]string{"ECHOHUB_TLS_CERT": srv.certFile, "ECHOHUB_TLS_KEY": other.keyFile},
			"--tls-key " + other.keyFile + ": tls: private key does not match public key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := append([]string{"serve", "--listen", busy.Addr().String()}, tc.args...)
			code, stdout, stderr := runCLI(context.Background(), "", args...)
			if code != 1 {
				t.Errorf("exit code = %d; want 1", code)
			}
			if stdout != "" {
				t.Errorf("stdout = %q; want nothing", stdout)
			}
			if want := "echohub: " + tc.want; !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("stderr = %q; want one line starting %q", stderr, want)
			}
		})
	}
}

func TestRunUnknownCommand(t *testing.T) {
	code, stdout, stderr := runCLI(context.Background(), "", "srve")
	if code != 1 || stdout != "" || stderr != "echohub: unknown command \"srve\" (want serve, client, bench, healthcheck or version)\n" {
		t.Errorf("run(srve) = %d, %q, %q; want 1, no output, one error line", code, stdout, stderr)
	}
}

func TestRunHelp(t *testing.T) {
	code, stdout, stderr := runCLI(context.Background(), "", "serve", "--help")
	if code != 0 || stderr != "" {
		t.Errorf("run(serve --help) = %d, stderr %q; want 0 and no stderr", code, stderr)
	}
	for _, flag := range []string{"--listen", "--framing", "--max-message", "--exclude-sender", "--queue", "--max-pending",
		"--slow", "--stall-limit", "--write-timeout", "--coalesce", "--max-clients", "--log-level", "--log-format", "--shutdown-timeout", "--metrics-listen", "--pprof", "$ECHOHUB_LISTEN", "$ECHOHUB_METRICS_LISTEN"} {
		if !strings.Contains(stdout, flag) {
			t.Errorf("serve --help does not mention %s", flag)
		}
	}
}

func TestRunVersion(t *testing.T) {
	code, stdout, _ := runCLI(context.Background(), "", "version")
	if code != 0 || !strings.HasPrefix(stdout, "echohub ") {
		t.Errorf("run(version) = %d, %q; want 0, \"echohub <version>\"", code, stdout)
	}
}

// TestRunServe runs `echohub serve` in-process until its context ends, as
// SIGINT does, and checks that it exits 0 after serving.
func TestRunServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := newPipeWriter(t)
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"echohub", "serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--log-level", "debug"},
			strings.NewReader(""), new(bytes.Buffer), stderr)
	}()
	addr := stderr.listenAddr(t)
	alice := dial(t, addr, "alice")
	alice.send(t, "hi\n")
	expectLine(t, alice, "hi\n")

	// echohub client: stdin to the server, the stream to stdout, exit 0 at EOF.
	code, stdout, errOut := runCLI(ctx, "from client\n", "client", addr)
	if code != 0 || stdout != "from client\n" || errOut != "" {
		t.Errorf("run(client) = %d, %q, %q; want 0, %q, no error", code, stdout, errOut, "from client\n")
	}
	expectLine(t, alice, "from client\n")

	cancel()
	expectExit(t, done, 0)
	expectClosed(t, alice)
}

func TestRunClientRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	code, _, stderr := runCLI(context.Background(), "", "client", addr)
	if code != 1 || !strings.Contains(stderr, "connection refused") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("run(client %s) = %d, %q; want 1 and one line saying connection refused", addr, code, stderr)
	}
}

// A pipeWriter is a log destination whose lines a test can wait for.
type pipeWriter struct {
	*os.File
	lines *bufio.Scanner
}

func newPipeWriter(t *testing.T) *pipeWriter {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(); r.Close() })
	return &pipeWriter{File: w, lines: bufio.NewScanner(r)}
}

// listenAddr waits for the "listening" log line and returns its address.
func (p *pipeWriter) listenAddr(t *testing.T) string {
	t.Helper()
	for p.lines.Scan() {
		var entry struct{ Message, Addr string }
		if json.Unmarshal(p.lines.Bytes(), &entry) == nil && entry.Message == "listening" {
			go func() { // keep draining, so logging never blocks
				for p.lines.Scan() {
				}
			}()
			return entry.Addr
		}
	}
	t.Fatal("no listening log line")
	return ""
}

// TestBinarySIGTERM builds the binary and checks that SIGTERM shuts it down
// gracefully with exit code 0.
func TestBinarySIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--log-format", "json")
	stderr := newPipeWriter(t)
	cmd.Stderr = stderr.File
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := stderr.listenAddr(t)
	alice := dial(t, addr, "alice")
	alice.send(t, "before sigterm\n")
	expectLine(t, alice, "before sigterm\n")

	cmd.Process.Signal(syscall.SIGTERM)
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("echohub serve after SIGTERM: %v; want exit code 0", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-waited
		t.Fatal("echohub serve did not exit within 10s of SIGTERM")
	}
	expectClosed(t, alice)
}

// TestServeFlagsConfig: the tuning flags reach the config, from the command
// line or the environment, and default to the documented values.
func TestServeFlagsConfig(t *testing.T) {
	parse := parseServeFlags
	if cfg := parse(t); cfg.coalesce != defaultCoalesce || cfg.stallLimit != defaultStallLimit {
		t.Errorf("defaults: coalesce %v, stall limit %v; want %v, %v", cfg.coalesce, cfg.stallLimit, defaultCoalesce, defaultStallLimit)
	}
	if cfg := parse(t, "--coalesce", "0", "--stall-limit", "750ms"); cfg.coalesce != 0 || cfg.stallLimit != 750*time.Millisecond {
		t.Errorf("flags: coalesce %v, stall limit %v; want 0s, 750ms", cfg.coalesce, cfg.stallLimit)
	}
	if cfg := parse(t); cfg.stallPause != defaultStallPause || cfg.spillBuffer != defaultSpillBuffer {
		t.Errorf("defaults: stall pause %v, spill buffer %d; want %v, %d", cfg.stallPause, cfg.spillBuffer, defaultStallPause, defaultSpillBuffer)
	}
	if cfg := parse(t, "--stall-limit", "300ms", "--spill-buffer", "0"); cfg.stallPause != 300*time.Millisecond || cfg.spillBuffer != 0 {
		t.Errorf("--stall-limit 300ms --spill-buffer 0: stall pause %v, spill buffer %d; want the pause lowered to the limit, 0", cfg.stallPause, cfg.spillBuffer)
	}
	if cfg := parse(t, "--metrics-listen", "127.0.0.1:0"); cfg.clientsShowAddr {
		t.Errorf("defaults: clients show addr %v; want false", cfg.clientsShowAddr)
	}
	if cfg := parse(t, "--metrics-listen", "127.0.0.1:0", "--clients-show-addr"); !cfg.clientsShowAddr {
		t.Errorf("flags: clients show addr %v; want true", cfg.clientsShowAddr)
	}
	t.Setenv("ECHOHUB_COALESCE", "5ms")
	t.Setenv("ECHOHUB_STALL_LIMIT", "10s")
	if cfg := parse(t); cfg.coalesce != 5*time.Millisecond || cfg.stallLimit != 10*time.Second {
		t.Errorf("env: coalesce %v, stall limit %v; want 5ms, 10s", cfg.coalesce, cfg.stallLimit)
	}
}
