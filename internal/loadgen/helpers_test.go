package loadgen

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"io"
	"math/big"
	"net"
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
type fakeHub struct {
	// Immutable after startFakeHub.
	framing   string
	ln        net.Listener
	kickAfter int // after this many messages, close every connection that never sent; 0 = never

	mu       sync.Mutex
	conns    map[net.Conn]bool // value: the connection has sent a frame
	messages int               // 'M' frames broadcast
	closed   bool

	wg sync.WaitGroup // acceptLoop and every readLoop
}

// startFakeHub starts a fakeHub on 127.0.0.1 and returns its address. It
// stops in t.Cleanup. With tlsConfig non-nil it speaks TLS.
func startFakeHub(t *testing.T, framing string, tlsConfig *tls.Config, kickAfter int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	h := &fakeHub{framing: framing, ln: ln, kickAfter: kickAfter, conns: map[net.Conn]bool{}}
	h.wg.Go(h.acceptLoop)
	t.Cleanup(func() {
		ln.Close()
		h.mu.Lock()
		h.closed = true
		for c := range h.conns {
			c.Close()
		}
		h.mu.Unlock()
		h.wg.Wait()
	})
	return ln.Addr().String()
}

// acceptLoop returns when the listener is closed.
func (h *fakeHub) acceptLoop() {
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return
		}
		h.mu.Lock()
		if h.closed {
			c.Close()
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
		h.mu.Unlock()
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
