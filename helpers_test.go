package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/urfave/cli/v2"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"
)

// ioTimeout bounds every read and write a test makes, so no test can hang.
const ioTimeout = 10 * time.Second

// A testServer is a server on a 127.0.0.1 port, shut down by t.Cleanup.
type testServer struct {
	*server
	addr string
	logs *logBuffer

	afterShutdown []func() // run by Cleanup once Shutdown has returned, such as stopping the web listener
}

// testConfig returns the defaults for a test server on 127.0.0.1:0, with
// small socket buffers so that a frozen reader's queue fills fast.
func testConfig() config {
	cfg := defaultConfig()
	cfg.listen = "127.0.0.1:0"
	cfg.logLevel = zerolog.DebugLevel
	cfg.sendBuffer = 16 << 10
	return cfg
}

// startTestServer runs a server for cfg on 127.0.0.1:0. Its logs go to the
// test log and to ts.logs. Cleanup shuts it down within 5s and checks that
// Serve returned errServerClosed.
func startTestServer(t testing.TB, cfg config) *testServer {
	t.Helper()
	if err := cfg.validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := new(logBuffer)
	log := zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), logs)).Level(cfg.logLevel)
	ts := &testServer{server: newServer(cfg, log), addr: ln.Addr().String(), logs: logs}
	if len(cfg.backplane) > 0 {
		bp, err := dialBackplane(context.Background(), cfg, log)
		if err != nil {
			ln.Close()
			t.Fatalf("dialBackplane: %v", err)
		}
		ts.useBackplane(bp)
	}
	served := make(chan error, 1)
	go func() { served <- ts.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := ts.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown() = %v; want nil", err)
		}
		if err := <-served; !errors.Is(err, errServerClosed) {
			t.Errorf("Serve() = %v; want errServerClosed", err)
		}
		for _, f := range ts.afterShutdown {
			f()
		}
	})
	return ts
}

// waitClients waits until n clients are registered with the hub.
func (ts *testServer) waitClients(t testing.TB, n int) {
	t.Helper()
	waitFor(t, 5*time.Second, func() error {
		if got := ts.m.clients.Load(); got != int64(n) {
			return fmt.Errorf("clients = %d; want %d", got, n)
		}
		return nil
	})
}

// closes returns how many clients were closed for reason r.
func (ts *testServer) closes(r closeReason) uint64 { return ts.m.closes[r].Load() }

// serverSide returns the server's client for the test connection c.
func (ts *testServer) serverSide(t *testing.T, c *testConn) *client {
	t.Helper()
	var found *client
	waitFor(t, 5*time.Second, func() error {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		for sc := range ts.conns {
			if sc.conn.RemoteAddr().String() == c.LocalAddr().String() {
				found = sc
				return nil
			}
		}
		return fmt.Errorf("no server-side client for %s", c.LocalAddr())
	})
	return found
}

// A logBuffer collects log lines for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// has reports whether one log line contains every one of parts.
func (l *logBuffer) has(parts ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range strings.Split(l.buf.String(), "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			return true
		}
	}
	return false
}

// entries returns the JSON log lines whose message is msg, decoded.
func (l *logBuffer) entries(t testing.TB, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(l.buf.String(), "\n") {
		var e map[string]any
		if line == "" || !strings.Contains(line, msg) {
			continue
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if e["message"] == msg {
			out = append(out, e)
		}
	}
	return out
}

// A testConn is a named test client.
type testConn struct {
	net.Conn
	name string
	r    *bufio.Reader
}

// dial connects a client named name to addr; Cleanup closes it.
func dial(t *testing.T, addr, name string) *testConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &testConn{Conn: conn, name: name, r: bufio.NewReaderSize(conn, 64<<10)}
}

// dialUnread connects to addr for a peer that does not read. Its receive
// buffer is set small before it connects, so its TCP window stays tiny and
// the server's socket buffer for it does not grow: what the server sends it
// backs up after kilobytes. Cleanup closes it.
func dialUnread(t *testing.T, addr string) net.Conn { return dialUnreadFrom(t, addr, "") }

// dialUnreadFrom is dialUnread from the local address ip ("": any).
func dialUnreadFrom(t *testing.T, addr, ip string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: ioTimeout, Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		rc.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return err
	}}
	if ip != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(ip)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// dialFrom connects a client named name to addr from the local address ip,
// such as 127.0.0.2 (Linux routes all of 127.0.0.0/8 to lo); Cleanup closes it.
func dialFrom(t *testing.T, addr, name, ip string) *testConn {
	t.Helper()
	d := net.Dialer{Timeout: ioTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &testConn{Conn: conn, name: name, r: bufio.NewReaderSize(conn, 64<<10)}
}

// send writes s.
func (c *testConn) send(t *testing.T, s string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatalf("%s: send: %v", c.name, err)
	}
}

// readLine returns the next line, with its '\n'.
func (c *testConn) readLine(t *testing.T) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	line, err := c.r.ReadString('\n')
	if err != nil {
		t.Fatalf("%s: read line: got %q, %v", c.name, line, err)
	}
	return line
}

// expectLine reads one line and checks that it is want.
func expectLine(t *testing.T, c *testConn, want string) {
	t.Helper()
	if got := c.readLine(t); got != want {
		t.Fatalf("%s: read %q; want %q", c.name, got, want)
	}
}

// expectNothing checks that nothing arrives on c for d.
func expectNothing(t *testing.T, c *testConn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	b, err := c.r.ReadByte()
	if err == nil {
		rest, _ := c.r.Peek(c.r.Buffered())
		t.Fatalf("%s: got %q; want nothing", c.name, append([]byte{b}, rest...))
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%s: read: %v; want a timeout", c.name, err)
	}
}

// expectClosed checks that the server closes c with nothing more to read.
func expectClosed(t *testing.T, c *testConn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	b, err := c.r.ReadByte()
	switch {
	case err == nil:
		rest, _ := c.r.Peek(c.r.Buffered())
		t.Fatalf("%s: got %q; want the connection closed", c.name, append([]byte{b}, rest...))
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), isReset(err):
	default:
		t.Fatalf("%s: read: %v; want EOF", c.name, err)
	}
}

// isReset reports whether err is a connection reset.
func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// waitFor calls f until it returns nil, and fails the test with f's last
// error if that takes longer than timeout.
func waitFor(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// line returns the i-th test line of sender name, padded to size bytes
// counting its '\n'.
func line(name string, i, size int) string {
	s := fmt.Sprintf("%s %06d ", name, i)
	if pad := size - len(s) - 1; pad > 0 {
		s += strings.Repeat("x", pad)
	}
	return s + "\n"
}

// A testCA is a certificate authority made for one test. Its certificate,
// and the certificates and keys it issues, are PEM files in a t.TempDir():
// no private key is ever committed.
type testCA struct {
	dir      string
	certFile string
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
	serial   int64 // of the last certificate made
}

// A testCert is a certificate issued by a testCA, and its files.
type testCert struct {
	certFile, keyFile string
	serial            *big.Int
}

// newTestCA makes a CA named name, with its files in a new directory.
func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca := &testCA{dir: dir, certFile: filepath.Join(dir, name+".pem"), cert: cert, key: key, serial: 1}
	writePEM(t, ca.certFile, "CERTIFICATE", der)
	return ca
}

// issue makes a certificate for name, signed by ca, with a new serial
// number, and writes it and its key as name.pem and name-key.pem in ca's
// directory, replacing earlier ones. A server certificate is for 127.0.0.1
// (an IP SAN); a client certificate is for client authentication.
func (ca *testCA) issue(t *testing.T, name string, server bool) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := testCert{
		certFile: filepath.Join(ca.dir, name+".pem"),
		keyFile:  filepath.Join(ca.dir, name+"-key.pem"),
		serial:   tmpl.SerialNumber,
	}
	writePEM(t, c.certFile, "CERTIFICATE", der)
	writePEM(t, c.keyFile, "PRIVATE KEY", keyDER)
	return c
}

// writePEM writes one PEM block of type typ to the file name.
func writePEM(t *testing.T, name, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(name, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// testTLSConfig returns testConfig serving TLS with a server certificate
// from ca; with mtls, clients need a certificate from ca too.
func testTLSConfig(t *testing.T, ca *testCA, mtls bool) config {
	t.Helper()
	cfg := testConfig()
	srv := ca.issue(t, "server", true)
	cfg.tlsCert, cfg.tlsKey = srv.certFile, srv.keyFile
	if mtls {
		cfg.tlsClientCA = ca.certFile
	}
	var err error
	if cfg.tls, err = loadCertStore(cfg); err != nil {
		t.Fatalf("loadCertStore: %v", err)
	}
	return cfg
}

// clientTLS returns a client config that trusts ca and, unless cert is nil,
// presents cert, even to a server that asks for certificates from other CAs
// (crypto/tls would otherwise send none).
func clientTLS(t *testing.T, ca *testCA, cert *testCert) *tls.Config {
	t.Helper()
	conf := &tls.Config{RootCAs: x509.NewCertPool()}
	conf.RootCAs.AddCert(ca.cert)
	if cert != nil {
		c, err := tls.LoadX509KeyPair(cert.certFile, cert.keyFile)
		if err != nil {
			t.Fatal(err)
		}
		conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	return conf
}

// tryDialTLS connects to addr and completes the TLS handshake, within ioTimeout.
func tryDialTLS(addr string, conf *tls.Config) (*tls.Conn, error) {
	return tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", addr, conf)
}

// dialTLS connects a TLS client named name to addr; Cleanup closes it.
func dialTLS(t *testing.T, addr, name string, conf *tls.Config) *testConn {
	t.Helper()
	conn, err := tryDialTLS(addr, conf)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &testConn{Conn: conn, name: name, r: bufio.NewReaderSize(conn, 64<<10)}
}

// expectTLSRefused checks that the server refuses a TLS client named name:
// the handshake fails or, since in TLS 1.3 the client finishes its part
// before the server has checked the client's certificate, the first read
// does. It returns the client's error.
func expectTLSRefused(t *testing.T, addr, name string, conf *tls.Config) error {
	t.Helper()
	conn, err := tryDialTLS(addr, conf)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(ioTimeout))
	n, err := conn.Read(make([]byte, 1))
	var ne net.Error
	switch {
	case err == nil:
		t.Fatalf("%s: read %d bytes; want the connection refused", name, n)
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("%s: read: %v; want the connection refused", name, err)
	}
	return err
}

// peerSerial returns the serial number of the certificate the server
// presented to c, a TLS client.
func peerSerial(c net.Conn) *big.Int {
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber
}

// built is the echohub binary the tests that exec it share: built once, in
// a directory TestMain removes.
var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// buildBinary builds echohub, once per test run, and returns its path.
func buildBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "echohub-test-"); built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "echohub")
		if out, err := exec.Command("go", "build", "-o", built.bin, ".").CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

// startTestAPI runs the HTTP API of ts, whose config must set metricsListen
// (to 127.0.0.1:0), and returns its base URL. Cleanup shuts it down before
// ts, and checks that serve returned nil.
func startTestAPI(t *testing.T, ts *testServer) string {
	t.Helper()
	if ts.cfg.metricsListen == "" {
		t.Fatal("startTestAPI: cfg.metricsListen is empty")
	}
	api, err := listenHTTPAPI(ts.server)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- api.serve() }()
	t.Cleanup(func() {
		api.shutdown()
		if err := <-served; err != nil {
			t.Errorf("httpAPI.serve() = %v; want nil", err)
		}
	})
	return "http://" + api.addr()
}

// httpGet GETs url and returns the status code and body. It keeps no
// connection open, so goleak sees no idle transport goroutine.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	hc := &http.Client{Timeout: ioTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// scrape GETs baseURL/metrics and returns the value of every echohub_
// sample, keyed by name and labels as in the text format:
// `echohub_client_closes_total{reason="eof"}`.
func scrape(t *testing.T, baseURL string) (map[string]float64, error) {
	t.Helper()
	code, body := httpGet(t, baseURL+"/metrics")
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: status %d; want 200", code)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	families, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	got := make(map[string]float64)
	for name, mf := range families {
		if !strings.HasPrefix(name, "echohub_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := name
			for _, l := range m.GetLabel() {
				key += fmt.Sprintf("{%s=%q}", l.GetName(), l.GetValue())
			}
			switch {
			case m.GetCounter() != nil:
				got[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				got[key] = m.GetGauge().GetValue()
			default:
				return nil, fmt.Errorf("%s: neither a counter nor a gauge", key)
			}
		}
	}
	return got, nil
}

// clientsPage is the body of /clients, as tests decode it.
type clientsPage struct {
	Clients          []clientInfo `json:"clients"`            // connected, by id
	Closed           []clientInfo `json:"closed"`             // the last closed, newest first
	NextAfter        uint64       `json:"next_after"`         // set when more connected clients follow
	NextClosedBefore uint64       `json:"next_closed_before"` // set when older closed rows follow
}

// getClients GETs baseURL/clients and decodes it.
func getClients(t *testing.T, baseURL string) clientsPage {
	t.Helper()
	return getClientsPage(t, baseURL+"/clients")
}

// getClientsPage GETs url, a /clients URL with a query, and decodes it.
func getClientsPage(t *testing.T, url string) clientsPage {
	t.Helper()
	code, body := httpGet(t, url)
	if code != http.StatusOK {
		t.Fatalf("GET /clients: status %d, %q; want 200", code, body)
	}
	var page clientsPage
	if err := json.Unmarshal([]byte(body), &page); err != nil {
		t.Fatalf("GET /clients: %v in %q", err, body)
	}
	return page
}

// logAddrs reads JSON log lines until it has seen every one of msgs with an
// "addr" field, and returns those addresses by message. It then keeps
// draining, so that logging never blocks.
func (p *pipeWriter) logAddrs(t *testing.T, msgs ...string) map[string]string {
	t.Helper()
	addrs := make(map[string]string)
	for len(addrs) < len(msgs) && p.lines.Scan() {
		var entry struct{ Message, Addr string }
		if json.Unmarshal(p.lines.Bytes(), &entry) == nil && slices.Contains(msgs, entry.Message) && entry.Addr != "" {
			addrs[entry.Message] = entry.Addr
		}
	}
	if len(addrs) < len(msgs) {
		t.Fatalf("log lines with an addr: got %v; want %q", addrs, msgs)
	}
	go func() {
		for p.lines.Scan() {
		}
	}()
	return addrs
}

// expectExit waits for the exit code of an in-process run on done, and
// checks that it is want.
func expectExit(t *testing.T, done <-chan int, want int) {
	t.Helper()
	select {
	case code := <-done:
		if code != want {
			t.Errorf("exit code = %d; want %d", code, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return within 10s after its context ended")
	}
}

// startTestWeb runs the web listener of ts, whose config must set webListen
// (to 127.0.0.1:0), and returns its host:port. It stops after ts's Shutdown,
// as in serve, and Cleanup checks that serve returned nil.
func startTestWeb(t *testing.T, ts *testServer) string {
	t.Helper()
	if ts.cfg.webListen == "" {
		t.Fatal("startTestWeb: cfg.webListen is empty")
	}
	web, err := listenWeb(ts.server)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- web.serve() }()
	ts.afterShutdown = append(ts.afterShutdown, func() {
		web.shutdown()
		if err := <-served; err != nil {
			t.Errorf("webServer.serve() = %v; want nil", err)
		}
	})
	return web.addr()
}

// A wsTestConn is a named WebSocket test client.
type wsTestConn struct {
	*websocket.Conn
	name string
}

// dialWS connects a WebSocket client named name to url; Cleanup closes it.
func dialWS(t *testing.T, url, name string, opts *websocket.DialOptions) *wsTestConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("%s: dial %s: %v", name, url, err)
	}
	ws.SetReadLimit(-1)
	t.Cleanup(func() { ws.CloseNow() })
	return &wsTestConn{Conn: ws, name: name}
}

// sendWS sends data as one message of type typ.
func (c *wsTestConn) sendWS(t *testing.T, typ websocket.MessageType, data string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	if err := c.Write(ctx, typ, []byte(data)); err != nil {
		t.Fatalf("%s: send %q: %v", c.name, data, err)
	}
}

// readWS returns the next message. A deadline ends the connection, as the
// library does with any expired context.
func (c *wsTestConn) readWS(t *testing.T) (websocket.MessageType, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	typ, data, err := c.Read(ctx)
	return typ, string(data), err
}

// expectWS reads one message and checks that it is want, of type typ.
func expectWS(t *testing.T, c *wsTestConn, typ websocket.MessageType, want string) {
	t.Helper()
	gotTyp, got, err := c.readWS(t)
	if err != nil || gotTyp != typ || got != want {
		t.Fatalf("%s: read %v %q, %v; want %v %q", c.name, gotTyp, got, err, typ, want)
	}
}

// expectWSClose reads until the server's close frame and checks its status
// and text.
func expectWSClose(t *testing.T, c *wsTestConn, code websocket.StatusCode, text string) {
	t.Helper()
	typ, data, err := c.readWS(t)
	if err == nil {
		t.Fatalf("%s: read %v %q; want a close frame %d %q", c.name, typ, data, code, text)
	}
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != code || ce.Reason != text {
		t.Fatalf("%s: read: %v; want a close frame %d %q", c.name, err, code, text)
	}
}

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

// parseServeFlags returns the config that `echohub serve args...` would run
// with, from the flags and the environment.
func parseServeFlags(t *testing.T, args ...string) config {
	t.Helper()
	var cfg config
	app := &cli.App{Flags: serveFlags(), Action: func(cCtx *cli.Context) (err error) {
		cfg, err = configFromCLI(cCtx)
		return err
	}}
	if err := app.Run(append([]string{"serve"}, args...)); err != nil {
		t.Fatalf("serve %v: %v", args, err)
	}
	return cfg
}

// dialRawWS opens a WebSocket connection to addr's /ws by hand, over a plain
// net.Conn: no goroutine and no library state on the client side, so that a
// measurement of this process's stacks sees only the server's.
func dialRawWS(t testing.TB, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(ioTimeout))
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", addr)
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 512), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake with %s: %v, %v; want 101", addr, resp, err)
	}
	conn.SetDeadline(time.Time{})
	return conn
}
