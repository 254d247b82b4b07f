package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeHub is a minimal broadcast hub for the bench tests: every frame read
// from any connection is written to every connection, the sender included.
// It may listen on several addresses, and relay to a peer hub (bridge).
type fakeHub struct {
	// Immutable after newFakeHub.
	framing   string
	kickAfter int           // after this many messages, close every connection that never sent; 0 = never
	done      chan struct{} // closed in Cleanup

	mu       sync.Mutex        // guards the fields below
	conns    map[net.Conn]bool // value: the connection has sent a frame
	messages int               // 'M' frames broadcast
	closed   bool
	peer     *fakeHub // set by bridge: what this hub's clients send is relayed there
	relayed  []byte   // frames for peer not yet relayed

	wg sync.WaitGroup // every acceptLoop, readLoop and relayLoop
}

// newFakeHub returns a fakeHub that listens nowhere yet. It stops in
// t.Cleanup.
func newFakeHub(t *testing.T, framing string, kickAfter int) *fakeHub {
	h := &fakeHub{framing: framing, kickAfter: kickAfter, done: make(chan struct{}), conns: map[net.Conn]bool{}}
	t.Cleanup(func() {
		close(h.done)
		h.mu.Lock()
		h.closed = true
		for c := range h.conns {
			c.Close()
		}
		h.mu.Unlock()
		h.wg.Wait()
	})
	return h
}

// listen makes h accept connections on a new address on 127.0.0.1, and
// returns it. With tlsConfig non-nil it speaks TLS there.
func (h *fakeHub) listen(t *testing.T, tlsConfig *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	t.Cleanup(func() { ln.Close() }) // before h's Cleanup, which waits for acceptLoop
	h.wg.Go(func() { h.acceptLoop(ln) })
	return ln.Addr().String()
}

// startFakeHub starts a fakeHub on one address on 127.0.0.1 and returns it.
func startFakeHub(t *testing.T, framing string, tlsConfig *tls.Config, kickAfter int) string {
	t.Helper()
	return newFakeHub(t, framing, kickAfter).listen(t, tlsConfig)
}

// bridge links a and b as two nodes of a badly made cluster: each delivers
// what its own clients send at once, and relays it to the other in batches,
// every interval. Nothing is lost, but the two nodes' clients see the
// messages in different orders, which is what the order check must catch.
func bridge(a, b *fakeHub, interval time.Duration) {
	a.peer, b.peer = b, a
	a.wg.Go(func() { a.relayLoop(interval) })
	b.wg.Go(func() { b.relayLoop(interval) })
}

// relayLoop hands what h's clients sent to h's peer every interval. It
// returns when h stops.
func (h *fakeHub) relayLoop(interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-h.done:
			return
		case <-tick.C:
		}
		h.mu.Lock()
		batch := h.relayed
		h.relayed = nil
		h.mu.Unlock()
		if len(batch) > 0 {
			h.peer.broadcast(batch, 0)
		}
	}
}

// acceptLoop returns when ln is closed.
func (h *fakeHub) acceptLoop(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			c.Close()
			continue
		}
		h.conns[c] = false
		h.mu.Unlock()
		h.wg.Go(func() { h.readLoop(c) })
	}
}

// readLoop broadcasts what c sends, every frame already read in one write
// per connection. It returns when c fails or is closed.
func (h *fakeHub) readLoop(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	off := 0 // where a frame's payload starts
	if h.framing == Len32 {
		off = 4
	}
	for {
		var batch []byte
		var messages int
		var err error
		for len(batch) == 0 || (err == nil && r.Buffered() > 0) {
			var frame []byte
			if h.framing == Line {
				frame, err = r.ReadBytes('\n')
			} else {
				frame = make([]byte, 4)
				if _, err = io.ReadFull(r, frame); err == nil {
					frame = append(frame, make([]byte, binary.BigEndian.Uint32(frame))...)
					_, err = io.ReadFull(r, frame[4:])
				}
			}
			if err != nil {
				break
			}
			batch = append(batch, frame...)
			if len(frame) > off && frame[off] == 'M' {
				messages++
			}
		}
		h.mu.Lock()
		if err != nil {
			delete(h.conns, c)
			h.mu.Unlock()
			return
		}
		h.conns[c] = true
		if h.peer != nil {
			h.relayed = append(h.relayed, batch...)
		}
		h.mu.Unlock()
		h.broadcast(batch, messages)
	}
}

// broadcast writes batch, holding messages 'M' frames, to every connection.
func (h *fakeHub) broadcast(batch []byte, messages int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.messages += messages
	for o := range h.conns {
		o.SetWriteDeadline(time.Now().Add(5 * time.Second))
		o.Write(batch)
	}
	if h.kickAfter > 0 && h.messages >= h.kickAfter {
		for o, sent := range h.conns {
			if !sent {
				o.Close()
			}
		}
	}
}

// waitFor polls f every few milliseconds until it returns nil, and fails t
// with f's last error if that takes longer than timeout.
func waitFor(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		<-tick.C
	}
}

// testOptions returns the options of a short test run against addr.
func testOptions(addr, framing string) Options {
	return Options{
		Addr: addr, Framing: framing, Subs: 3, Pubs: 2, Size: 64,
		Rate: 2000, Duration: time.Second, Warmup: 200 * time.Millisecond, SLO: 50 * time.Millisecond,
	}
}

// checkClean fails t unless res shows a run without any fault.
func checkClean(t *testing.T, res Result) {
	t.Helper()
	if res.Lost != 0 || res.Duplicates != 0 || res.Reordered != 0 || res.Corrupt != 0 ||
		res.DisconnectedSubs != 0 || res.PublisherErrors != 0 || res.Error != "" {
		t.Errorf("faults in %+v", res)
	}
	if res.Published == 0 || res.Received != res.Expected || res.Expected != res.Published*int64(res.Subs) {
		t.Errorf("published %d, expected %d deliveries, received %d", res.Published, res.Expected, res.Received)
	}
	if res.LatencySamples == 0 || res.LatencyP50Us > res.LatencyP99Us || res.LatencyP99Us > res.LatencyMaxUs {
		t.Errorf("latency figures %d samples, p50 %d, p99 %d, max %d µs", res.LatencySamples, res.LatencyP50Us, res.LatencyP99Us, res.LatencyMaxUs)
	}
}

// testCert returns a server TLS configuration for 127.0.0.1 and the pool
// holding its self-signed certificate, for a client to verify it with.
func testCert(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, pool
}

// checkTargetRun runs a short measurement against url, a Redis or NATS
// target of kind, and checks that it is clean, published enough and names
// the target in its table.
func checkTargetRun(t *testing.T, url, framing, kind string) {
	t.Helper()
	res, out := shortRun(t, testOptions(url, framing))
	if res.Target != kind || res.Published < 1000 {
		t.Errorf("Run against %s: target %q, %d published; want %s, at least 1000", url, res.Target, res.Published, kind)
	}
	if want := fmt.Sprintf("target       %s (%s, %s)", url, kind, framing); !strings.Contains(out, want) {
		t.Errorf("table has no %q:\n%s", want, out)
	}
}

// shortRun runs a 500ms measurement with opts, checks that it is clean, and
// returns its result and the table it printed.
func shortRun(t *testing.T, opts Options) (Result, string) {
	t.Helper()
	opts.Duration, opts.Warmup = 500*time.Millisecond, 100*time.Millisecond
	var out bytes.Buffer
	res, err := Run(context.Background(), opts, &out)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkClean(t, res)
	return res, out.String()
}
