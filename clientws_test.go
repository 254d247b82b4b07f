package main

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// startCLIClient runs `echohub client args...` in-process with stdin from a
// pipe that stays open until the returned function closes it; that function
// then returns the exit code, stderr, and each line the client printed is
// sent on lines meanwhile.
func startCLIClient(t *testing.T, args ...string) (stdin io.Writer, lines <-chan string, finish func() (int, string)) {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	var errOut strings.Builder
	done := make(chan int, 1)
	go func() {
		code := run(context.Background(), append([]string{"echohub", "client"}, args...), inR, outW, &errOut)
		outW.Close()
		done <- code
	}()
	ch := make(chan string, 100)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	return inW, ch, func() (int, string) {
		inW.Close()
		select {
		case code := <-done:
			for range ch {
			}
			return code, errOut.String()
		case <-time.After(ioTimeout):
			t.Fatal("client did not exit after EOF on stdin")
			return 0, ""
		}
	}
}

// expectPrinted checks that the next line the client printed is want.
func expectPrinted(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	select {
	case got := <-lines:
		if got != want {
			t.Fatalf("client printed %q; want %q", got, want)
		}
	case <-time.After(ioTimeout):
		t.Fatalf("client printed nothing; want %q", want)
	}
}

// TestRunClientWS: `echohub client ws://...` sends stdin lines as messages
// and prints the stream as lines, like the TCP client; at EOF it closes
// normally and exits 0.
func TestRunClientWS(t *testing.T) {
	ts, url := startWeb(t, testWebConfig())
	alice := dial(t, ts.addr, "alice")
	ts.waitClients(t, 1)

	stdin, lines, finish := startCLIClient(t, url)
	ts.waitClients(t, 2)
	io.WriteString(stdin, "from the cli\n\nno newline at the end")
	expectLine(t, alice, "from the cli\n")
	expectLine(t, alice, "\n")
	expectPrinted(t, lines, "from the cli")
	expectPrinted(t, lines, "")
	alice.send(t, "to the cli\n")
	expectPrinted(t, lines, "to the cli")
	if code, stderr := finish(); code != 0 || stderr != "" {
		t.Errorf("client exit = %d, %q; want 0, no error", code, stderr)
	}
	expectLine(t, alice, "to the cli\n")
	expectLine(t, alice, "no newline at the end\n") // sent at EOF, when the client knows the line is complete
	waitCloses(t, ts, reasonEOF, 1)
}

// TestRunClientWSLen32: with --framing len32 the client reads and writes
// len32 frames, so it prints what a TCP client of the hub reads.
func TestRunClientWSLen32(t *testing.T) {
	cfg := testWebConfig()
	cfg.framing = framingLen32
	ts, url := startWeb(t, cfg)
	alice := dial(t, ts.addr, "alice")
	ts.waitClients(t, 1)
	code, stdout, stderr := runCLI(context.Background(), len32("one")+len32("")+len32("two\n"), "client", "--framing", "len32", url)
	if code != 0 || stderr != "" || !strings.HasPrefix(len32("one")+len32("")+len32("two\n"), stdout) {
		t.Errorf("run(client --framing len32) = %d, %q, %q; want 0, a prefix of what it sent, no error", code, stdout, stderr)
	}
	if got := readN(t, alice, len(len32("one")+len32("")+len32("two\n"))); got != len32("one")+len32("")+len32("two\n") {
		t.Errorf("alice: read %q; want the three frames", got)
	}
}

// TestRunClientWSS: wss:// needs no --tls; --tls-ca names the CA to trust.
func TestRunClientWSS(t *testing.T) {
	ca := newTestCA(t, "ca")
	cfg := testTLSConfig(t, ca, false)
	cfg.webListen = "127.0.0.1:0"
	ts := startTestServer(t, cfg)
	url := "wss://" + startTestWeb(t, ts) + "/ws"
	alice := dialTLS(t, ts.addr, "alice", clientTLS(t, ca, nil))
	ts.waitClients(t, 1)
	if code, _, stderr := runCLI(context.Background(), "over wss\n", "client", "--tls-ca", ca.certFile, url); code != 0 || stderr != "" {
		t.Errorf("run(client --tls-ca wss://) = %d, %q; want 0, no error", code, stderr)
	}
	expectLine(t, alice, "over wss\n")
	code, _, stderr := runCLI(context.Background(), "", "client", url)
	if code != 1 || !strings.Contains(stderr, "certificate signed by unknown authority") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("run(client wss://) = %d, %q; want 1 and one line saying unknown authority", code, stderr)
	}
}

// TestRunClientWSClosed: a close by the server other than 1000 or 1001 is an
// error that carries the server's text.
func TestRunClientWSClosed(t *testing.T) {
	cfg := testWebConfig()
	cfg.maxMessage = 8
	_, url := startWeb(t, cfg)
	code, _, stderr := runCLI(context.Background(), "much too long for the hub\n", "client", url)
	want := "echohub: client: closed by the server: echohub: message too long (max 8 bytes); closing (status 1009)\n"
	if code != 1 || stderr != want {
		t.Errorf("run(client) = %d, %q; want 1, %q", code, stderr, want)
	}
}

// TestRunClientWSBadFlags: flags that do not fit the address fail with one
// line naming the flag.
func TestRunClientWSBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--framing", "len32", "127.0.0.1:1"}, "echohub: --framing: needs a ws:// or wss:// address\n"},
		{[]string{"--framing", "lines", "ws://127.0.0.1:1/ws"}, "echohub: --framing: unknown value \"lines\" (want line, raw, len32)\n"},
		{[]string{"--tls", "ws://127.0.0.1:1/ws"}, "echohub: --tls: not with a WebSocket URL (use wss://)\n"},
		{[]string{"--tls-insecure", "ws://127.0.0.1:1/ws"}, "echohub: --tls-insecure: needs a wss:// URL\n"},
		{[]string{"ws://"}, "echohub: client: invalid URL \"ws://\" (want ws://HOST:PORT/ws or wss://HOST:PORT/ws)\n"},
	} {
		code, stdout, stderr := runCLI(context.Background(), "", append([]string{"client"}, tc.args...)...)
		if code != 1 || stdout != "" || stderr != tc.want {
			t.Errorf("run(client %v) = %d, %q, %q; want 1, no output, %q", tc.args, code, stdout, stderr, tc.want)
		}
	}
}
