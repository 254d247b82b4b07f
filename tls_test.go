package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// waitCloses waits until n clients have been closed for reason r.
func waitCloses(t *testing.T, ts *testServer, r closeReason, n uint64) {
	t.Helper()
	waitFor(t, 5*time.Second, func() error {
		if got := ts.closes(r); got != n {
			return fmt.Errorf("closes{%s} = %d; want %d", r, got, n)
		}
		return nil
	})
}

func TestTLSBroadcast(t *testing.T) {
	ca := newTestCA(t, "ca")
	ts := startTestServer(t, testTLSConfig(t, ca, false))
	conf := clientTLS(t, ca, nil)
	alice, bob := dialTLS(t, ts.addr, "alice", conf), dialTLS(t, ts.addr, "bob", conf)
	ts.waitClients(t, 2)

	alice.send(t, "hello over tls\n")
	for _, c := range []*testConn{alice, bob} {
		expectLine(t, c, "hello over tls\n")
	}
	bob.send(t, "\x00\xffbinary\n")
	for _, c := range []*testConn{alice, bob} {
		expectLine(t, c, "\x00\xffbinary\n")
	}

	// README: at EOF a client still gets what was queued for it, and then
	// the server closes. tls.Conn.CloseWrite sends close_notify.
	if err := alice.Conn.(*tls.Conn).CloseWrite(); err != nil {
		t.Fatalf("alice: CloseWrite: %v", err)
	}
	expectClosed(t, alice)
	waitCloses(t, ts, reasonEOF, 1)
	bob.send(t, "bye\n")
	expectLine(t, bob, "bye\n")
	if got := ts.closes(reasonTLSHandshake); got != 0 {
		t.Errorf("closes{tls_handshake} = %d; want 0", got)
	}
}

// TestTLSMinVersion: TLS 1.2 is the oldest version served.
func TestTLSMinVersion(t *testing.T) {
	ca := newTestCA(t, "ca")
	ts := startTestServer(t, testTLSConfig(t, ca, false))
	old := clientTLS(t, ca, nil)
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if _, err := tryDialTLS(ts.addr, old); err == nil {
		t.Errorf("TLS 1.1 handshake succeeded; want it refused")
	}
	waitCloses(t, ts, reasonTLSHandshake, 1)

	v12 := clientTLS(t, ca, nil)
	v12.MaxVersion = tls.VersionTLS12
	carol := dialTLS(t, ts.addr, "carol", v12)
	if got := carol.Conn.(*tls.Conn).ConnectionState().Version; got != tls.VersionTLS12 {
		t.Errorf("carol: version %s; want TLS 1.2", tls.VersionName(got))
	}
	carol.send(t, "tls 1.2\n")
	expectLine(t, carol, "tls 1.2\n")
}

// TestTLSClientCert: with --tls-client-ca, a client needs a certificate
// signed by that CA. A refused client is closed as tls_handshake, never as
// slow_client, and the others do not notice.
func TestTLSClientCert(t *testing.T) {
	ca := newTestCA(t, "ca")
	ts := startTestServer(t, testTLSConfig(t, ca, true))
	aliceCert, bobCert := ca.issue(t, "alice", false), ca.issue(t, "bob", false)
	alice := dialTLS(t, ts.addr, "alice", clientTLS(t, ca, &aliceCert))
	bob := dialTLS(t, ts.addr, "bob", clientTLS(t, ca, &bobCert))
	ts.waitClients(t, 2)

	err := expectTLSRefused(t, ts.addr, "anon", clientTLS(t, ca, nil))
	t.Logf("anon, without a certificate: %v", err)
	waitCloses(t, ts, reasonTLSHandshake, 1)

	other := newTestCA(t, "other")
	malloryCert := other.issue(t, "mallory", false)
	err = expectTLSRefused(t, ts.addr, "mallory", clientTLS(t, ca, &malloryCert))
	t.Logf("mallory, with a certificate from another CA: %v", err)
	waitCloses(t, ts, reasonTLSHandshake, 2)
	if !ts.logs.has(`"message":"tls handshake failed"`, "certificate signed by unknown authority") {
		t.Errorf("no debug log line for mallory's certificate")
	}

	// Server certificates are not client certificates (extended key usage).
	err = expectTLSRefused(t, ts.addr, "server", clientTLS(t, ca, &testCert{certFile: ts.cfg.tlsCert, keyFile: ts.cfg.tlsKey}))
	t.Logf("a server certificate: %v", err)
	waitCloses(t, ts, reasonTLSHandshake, 3)

	alice.send(t, "still here\n")
	expectLine(t, alice, "still here\n")
	expectLine(t, bob, "still here\n")
	if got := ts.m.clients.Load(); got != 2 {
		t.Errorf("clients = %d; want 2", got)
	}
	if got := ts.closes(reasonSlowClient); got != 0 {
		t.Errorf("closes{slow_client} = %d; want 0", got)
	}
	if !ts.logs.has(`"level":"debug"`, `"message":"tls handshake failed"`, "certificate") {
		t.Errorf("no debug log line for the refused certificates")
	}
}

// TestTLSPlainClient: a client speaking plain TCP to a TLS server fails the
// handshake and is closed; TLS clients are unaffected.
func TestTLSPlainClient(t *testing.T) {
	ca := newTestCA(t, "ca")
	ts := startTestServer(t, testTLSConfig(t, ca, false))
	alice := dialTLS(t, ts.addr, "alice", clientTLS(t, ca, nil))
	ts.waitClients(t, 1)

	plain := dial(t, ts.addr, "plain")
	plain.send(t, "hello in plaintext\n")
	expectClosed(t, plain)
	waitCloses(t, ts, reasonTLSHandshake, 1)
	if !ts.logs.has(`"level":"debug"`, `"message":"tls handshake failed"`, "does not look like a TLS handshake") {
		t.Errorf("no debug log line for the failed handshake")
	}
	alice.send(t, "only tls\n")
	expectLine(t, alice, "only tls\n")
	expectNothing(t, alice, 100*time.Millisecond)
}

// TestTLSHandshakeTimeout: a client that connects and sends nothing holds
// its slot only until --handshake-timeout.
func TestTLSHandshakeTimeout(t *testing.T) {
	ca := newTestCA(t, "ca")
	cfg := testTLSConfig(t, ca, false)
	cfg.handshakeTimeout = 200 * time.Millisecond
	cfg.maxClients = 1
	ts := startTestServer(t, cfg)

	start := time.Now()
	silent := dial(t, ts.addr, "silent")
	ts.serverSide(t, silent)
	// While silent is in its handshake it holds the one slot: a TLS client
	// is refused, without the plaintext notice.
	conf := clientTLS(t, ca, nil)
	if _, err := tryDialTLS(ts.addr, conf); err == nil {
		t.Errorf("handshake while full succeeded; want the connection refused")
	}
	waitCloses(t, ts, reasonServerFull, 1)

	expectClosed(t, silent)
	if d := time.Since(start); d < cfg.handshakeTimeout {
		t.Errorf("silent closed after %v; want at least --handshake-timeout %v", d, cfg.handshakeTimeout)
	}
	waitCloses(t, ts, reasonTLSHandshake, 1)
	if !ts.logs.has(`"message":"tls handshake failed"`, "i/o timeout") {
		t.Errorf("no debug log line for the handshake timeout")
	}

	// The slot is free again.
	waitFor(t, 5*time.Second, func() error {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		if n := len(ts.conns); n != 0 {
			return fmt.Errorf("connections = %d; want 0", n)
		}
		return nil
	})
	alice := dialTLS(t, ts.addr, "alice", conf)
	alice.send(t, "my turn\n")
	expectLine(t, alice, "my turn\n")
}

// TestTLSReload: a reload serves the new certificate to new connections;
// connections already up go on; a failed reload keeps the certificate.
func TestTLSReload(t *testing.T) {
	ca := newTestCA(t, "ca")
	cfg := testTLSConfig(t, ca, false)
	ts := startTestServer(t, cfg)
	conf := clientTLS(t, ca, nil)
	alice := dialTLS(t, ts.addr, "alice", conf)
	first := peerSerial(alice.Conn)

	// reloadOn as serve runs it, with this channel for SIGHUP.
	hup := make(chan os.Signal)
	logs := new(logBuffer)
	ctx, cancel := context.WithCancel(context.Background())
	reloader := make(chan struct{})
	go func() {
		defer close(reloader)
		cfg.tls.reloadOn(ctx, hup, zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), logs)))
	}()
	defer func() { cancel(); <-reloader }()

	renewed := ca.issue(t, "server", true) // same files, new certificate
	if renewed.certFile != cfg.tlsCert || renewed.serial.Cmp(first) == 0 {
		t.Fatalf("issue: got %s, serial %v; want %s with a serial other than %v", renewed.certFile, renewed.serial, cfg.tlsCert, first)
	}
	hup <- syscall.SIGHUP
	waitFor(t, 5*time.Second, func() error {
		if !logs.has(`"level":"info"`, `"serial":"`+fmt.Sprintf("%X", renewed.serial.Bytes())+`"`, `"message":"tls certificates reloaded"`) {
			return errors.New("no info log line for the reload")
		}
		return nil
	})
	bob := dialTLS(t, ts.addr, "bob", conf)
	if got := peerSerial(bob.Conn); got.Cmp(renewed.serial) != 0 {
		t.Errorf("bob: server certificate serial %v; want %v, the reloaded one", got, renewed.serial)
	}
	ts.waitClients(t, 2)
	alice.send(t, "from before the reload\n")
	expectLine(t, alice, "from before the reload\n")
	expectLine(t, bob, "from before the reload\n")

	// A key that does not match: the reload fails and changes nothing.
	other := ca.issue(t, "other", true)
	key, err := os.ReadFile(other.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.tlsKey, key, 0o600); err != nil {
		t.Fatal(err)
	}
	hup <- syscall.SIGHUP
	waitFor(t, 5*time.Second, func() error {
		if !logs.has(`"level":"error"`, "--tls-key "+cfg.tlsKey, `"message":"tls reload failed; keeping the current certificates"`) {
			return errors.New("no error log line for the failed reload")
		}
		return nil
	})
	if err := cfg.tls.reload(); err == nil || !strings.Contains(err.Error(), "--tls-key "+cfg.tlsKey+": tls: private key does not match public key") {
		t.Errorf("reload() = %v; want an error naming --tls-key %s", err, cfg.tlsKey)
	}
	carol := dialTLS(t, ts.addr, "carol", conf)
	if got := peerSerial(carol.Conn); got.Cmp(renewed.serial) != 0 {
		t.Errorf("carol: server certificate serial %v; want %v, kept after the failed reload", got, renewed.serial)
	}
}

// TestRunServeTLSReload runs `echohub serve` with TLS in-process and sends
// the process a real SIGHUP: new connections see the new certificate while
// an existing one keeps working.
func TestRunServeTLSReload(t *testing.T) {
	ca := newTestCA(t, "ca")
	srv := ca.issue(t, "server", true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := newPipeWriter(t)
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"echohub", "serve", "--listen", "127.0.0.1:0", "--log-format", "json",
			"--tls-cert", srv.certFile, "--tls-key", srv.keyFile}, strings.NewReader(""), new(bytes.Buffer), stderr)
	}()
	addr := stderr.listenAddr(t) // logged after serve asked for SIGHUP
	conf := clientTLS(t, ca, nil)
	alice := dialTLS(t, addr, "alice", conf)
	if got := peerSerial(alice.Conn); got.Cmp(srv.serial) != 0 {
		t.Fatalf("alice: server certificate serial %v; want %v", got, srv.serial)
	}

	renewed := ca.issue(t, "server", true)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() error {
		conn, err := tryDialTLS(addr, conf)
		if err != nil {
			return err
		}
		defer conn.Close()
		if got := peerSerial(conn); got.Cmp(renewed.serial) != 0 {
			return fmt.Errorf("server certificate serial %v; want %v after SIGHUP", got, renewed.serial)
		}
		return nil
	})
	alice.send(t, "still connected\n")
	expectLine(t, alice, "still connected\n")

	cancel()
	expectExit(t, done, 0)
}

// TestRunClientTLS: `echohub client --tls` sends stdin over TLS, prints the
// stream, and half-closes at EOF with close_notify.
func TestRunClientTLS(t *testing.T) {
	ca := newTestCA(t, "ca")
	ts := startTestServer(t, testTLSConfig(t, ca, false))
	alice := dialTLS(t, ts.addr, "alice", clientTLS(t, ca, nil))
	ts.waitClients(t, 1)

	code, stdout, stderr := runCLI(context.Background(), "over tls\n", "client", "--tls", "--tls-ca", ca.certFile, ts.addr)
	if code != 0 || stdout != "over tls\n" || stderr != "" {
		t.Errorf("run(client --tls --tls-ca) = %d, %q, %q; want 0, %q, no error", code, stdout, stderr, "over tls\n")
	}
	expectLine(t, alice, "over tls\n")
	waitCloses(t, ts, reasonEOF, 1)

	// The server's CA is not among the system's roots.
	code, stdout, stderr = runCLI(context.Background(), "", "client", "--tls", ts.addr)
	if code != 1 || stdout != "" || !strings.Contains(stderr, "certificate signed by unknown authority") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("run(client --tls) = %d, %q, %q; want 1 and one line saying unknown authority", code, stdout, stderr)
	}
	code, stdout, stderr = runCLI(context.Background(), "insecure\n", "client", "--tls", "--tls-insecure", ts.addr)
	if code != 0 || stdout != "insecure\n" || stderr != "" {
		t.Errorf("run(client --tls --tls-insecure) = %d, %q, %q; want 0, %q, no error", code, stdout, stderr, "insecure\n")
	}
	expectLine(t, alice, "insecure\n")

	// A plain client gets nothing from a TLS server but a failed handshake.
	code, stdout, _ = runCLI(context.Background(), "plain\n", "client", ts.addr)
	if stdout != "" {
		t.Errorf("run(client) to a TLS server = %d, %q; want no output", code, stdout)
	}
	expectNothing(t, alice, 100*time.Millisecond)
}

// TestRunClientMTLS: with --tls-cert and --tls-key, `echohub client` passes
// a server's client certificate check; without, it is refused.
func TestRunClientMTLS(t *testing.T) {
	ca := newTestCA(t, "ca")
	ts := startTestServer(t, testTLSConfig(t, ca, true))
	aliceCert, bobCert := ca.issue(t, "alice", false), ca.issue(t, "bob", false)
	alice := dialTLS(t, ts.addr, "alice", clientTLS(t, ca, &aliceCert))
	ts.waitClients(t, 1)

	code, stdout, stderr := runCLI(context.Background(), "from bob\n", "client", "--tls", "--tls-ca", ca.certFile,
		"--tls-cert", bobCert.certFile, "--tls-key", bobCert.keyFile, ts.addr)
	if code != 0 || stdout != "from bob\n" || stderr != "" {
		t.Errorf("run(client --tls-cert bob) = %d, %q, %q; want 0, %q, no error", code, stdout, stderr, "from bob\n")
	}
	expectLine(t, alice, "from bob\n")

	code, stdout, stderr = runCLI(context.Background(), "from anon\n", "client", "--tls", "--tls-ca", ca.certFile, ts.addr)
	if want := "echohub: client: remote error: tls: certificate required\n"; code != 1 || stdout != "" || stderr != want {
		t.Errorf("run(client --tls without a certificate) = %d, %q, %q; want 1, no output, %q", code, stdout, stderr, want)
	}
	other := newTestCA(t, "other")
	malloryCert := other.issue(t, "mallory", false)
	code, stdout, stderr = runCLI(context.Background(), "from mallory\n", "client", "--tls", "--tls-ca", ca.certFile,
		"--tls-cert", malloryCert.certFile, "--tls-key", malloryCert.keyFile, ts.addr)
	if want := "echohub: client: remote error: tls: unknown certificate authority\n"; code != 1 || stdout != "" || stderr != want {
		t.Errorf("run(client --tls-cert mallory) = %d, %q, %q; want 1, no output, %q", code, stdout, stderr, want)
	}
	waitCloses(t, ts, reasonTLSHandshake, 2)
	expectNothing(t, alice, 100*time.Millisecond)
}

func TestRunClientBadTLSFlags(t *testing.T) {
	ca := newTestCA(t, "ca")
	alice := ca.issue(t, "alice", false)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, tc := range []struct {
		name string
		args []string
		want string // the one stderr line must start with "echohub: " and this
	}{
		{"ca without tls", []string{"--tls-ca", ca.certFile}, "--tls-ca: needs --tls"},
		{"insecure without tls", []string{"--tls-insecure"}, "--tls-insecure: needs --tls"},
		{"cert without key", []string{"--tls", "--tls-cert", alice.certFile}, "--tls-cert " + alice.certFile + ": no --tls-key given"},
		{"key without cert", []string{"--tls", "--tls-key", alice.keyFile}, "--tls-key " + alice.keyFile + ": no --tls-cert given"},
		{"missing ca", []string{"--tls", "--tls-ca", missing}, "--tls-ca " + missing + ": no such file or directory"},
		{"ca without certificates", []string{"--tls", "--tls-ca", alice.keyFile}, "--tls-ca " + alice.keyFile + ": no certificates found"},
		{"insecure and ca", []string{"--tls", "--tls-insecure", "--tls-ca", ca.certFile}, "--tls-insecure: conflicts with --tls-ca"},
		{"key mismatch", []string{"--tls", "--tls-cert", alice.certFile, "--tls-key", ca.issue(t, "bob", false).keyFile},
			"--tls-key " + filepath.Join(ca.dir, "bob-key.pem") + ": tls: private key does not match public key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The port is never dialled: the flags fail first.
			code, stdout, stderr := runCLI(context.Background(), "", append(append([]string{"client"}, tc.args...), "127.0.0.1:1")...)
			if want := "echohub: " + tc.want; code != 1 || stdout != "" || !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("run(client %s) = %d, %q, %q; want 1, no output, one line starting %q",
					strings.Join(tc.args, " "), code, stdout, stderr, want)
			}
		})
	}
}

func TestRunHelpTLS(t *testing.T) {
	for _, tc := range []struct {
		cmd   string
		flags []string
	}{
		{"serve", []string{"--tls-cert", "--tls-key", "--tls-client-ca", "--handshake-timeout", "$ECHOHUB_TLS_CERT", "$ECHOHUB_HANDSHAKE_TIMEOUT"}},
		{"client", []string{"--tls", "--tls-ca", "--tls-cert", "--tls-key", "--tls-insecure"}},
	} {
		code, stdout, stderr := runCLI(context.Background(), "", tc.cmd, "--help")
		if code != 0 || stderr != "" {
			t.Errorf("run(%s --help) = %d, stderr %q; want 0 and no stderr", tc.cmd, code, stderr)
		}
		for _, flag := range tc.flags {
			if !strings.Contains(stdout, flag) {
				t.Errorf("%s --help does not mention %s", tc.cmd, flag)
			}
		}
	}
}

// TestTLSShutdownDuringHandshake: Shutdown does not wait out
// --handshake-timeout for a client still in its handshake, and closes it as
// shutdown, not tls_handshake.
func TestTLSShutdownDuringHandshake(t *testing.T) {
	ca := newTestCA(t, "ca")
	cfg := testTLSConfig(t, ca, false)
	cfg.handshakeTimeout = time.Minute
	ts := startTestServer(t, cfg)
	silent := dial(t, ts.addr, "silent")
	ts.serverSide(t, silent)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown() = %v; want nil", err)
	}
	expectClosed(t, silent)
	if got, want := ts.closes(reasonShutdown), uint64(1); got != want {
		t.Errorf("closes{shutdown} = %d; want %d", got, want)
	}
	if got := ts.closes(reasonTLSHandshake); got != 0 {
		t.Errorf("closes{tls_handshake} = %d; want 0", got)
	}
}
