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
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/google/go-cmp/cmp"
	"github.com/urfave/cli/v2"
)

// benchHub is a minimal broadcast hub for the bench tests: every frame read
// from any connection is written to every connection, the sender included.
type benchHub struct {
	// Immutable after startBenchHub.
	framing   string
	ln        net.Listener
	kickAfter int // after this many messages, close every connection that never sent; 0 = never

	mu       sync.Mutex
	conns    map[net.Conn]bool // value: the connection has sent a frame
	messages int               // 'M' frames broadcast
	closed   bool

	wg sync.WaitGroup // acceptLoop and every readLoop
}

// startBenchHub starts a benchHub on 127.0.0.1 and returns its address. It
// stops in t.Cleanup. With tlsConfig non-nil it speaks TLS.
func startBenchHub(t *testing.T, framing string, tlsConfig *tls.Config, kickAfter int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	h := &benchHub{framing: framing, ln: ln, kickAfter: kickAfter, conns: map[net.Conn]bool{}}
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
func (h *benchHub) acceptLoop() {
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
func (h *benchHub) readLoop(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	off := 0 // where a frame's payload starts
	if h.framing == benchLen32 {
		off = 4
	}
	for {
		var batch []byte
		var messages int
		var err error
		for len(batch) == 0 || (err == nil && r.Buffered() > 0) {
			var frame []byte
			if h.framing == benchLine {
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

// benchTestOptions returns the options of a short test run against addr.
func benchTestOptions(addr, framing string) benchOptions {
	return benchOptions{
		addr: addr, framing: framing, subs: 3, pubs: 2, size: 64,
		rate: 2000, duration: time.Second, warmup: 200 * time.Millisecond, slo: 50 * time.Millisecond,
	}
}

func TestBenchEncodeDecode(t *testing.T) {
	tests := []struct {
		name    string
		framing string
		size    int
		h       benchHeader
	}{
		{"zero line", benchLine, 64, benchHeader{}},
		{"zero len32", benchLen32, 64, benchHeader{}},
		{"smallest line", benchLine, benchHeaderLen + 1, benchHeader{pub: 1, seq: 2, ts: 3}},
		{"smallest len32", benchLen32, benchHeaderLen, benchHeader{pub: 1, seq: 2, ts: 3}},
		{"largest values", benchLine, 1024, benchHeader{pub: math.MaxUint16, seq: math.MaxUint64, ts: math.MaxInt64}},
		{"typical len32", benchLen32, 1024, benchHeader{pub: 7, seq: 123456789, ts: 987654321012}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := benchNewFrame(tt.framing, tt.size)
			benchEncode(frame[len(frame)-tt.size:], tt.h)
			if n := len(frame); n != benchWireSize(tt.framing, tt.size) {
				t.Fatalf("len(frame) = %d; want %d", n, benchWireSize(tt.framing, tt.size))
			}
			payload, n, err := benchNextFrame(tt.framing, frame, benchMaxSize)
			if n != len(frame) || err != nil {
				t.Fatalf("benchNextFrame(%q) = %q, %d, %v; want the whole frame", frame, payload, n, err)
			}
			wantNL := -1 // len32 payloads hold no newline at all
			if tt.framing == benchLine {
				wantNL = tt.size - 1
			}
			if len(payload) != tt.size || bytes.IndexByte(payload, '\n') != wantNL {
				t.Fatalf("payload %q: want %d bytes, the first newline at %d", payload, tt.size, wantNL)
			}
			got, ok := benchDecode(payload)
			if !ok {
				t.Fatalf("benchDecode(%q) failed", payload)
			}
			if diff := cmp.Diff(tt.h, got, cmp.AllowUnexported(benchHeader{})); diff != "" {
				t.Errorf("benchDecode(%q) (-want +got):\n%s", payload, diff)
			}
		})
	}
}

func TestBenchDecodeRejects(t *testing.T) {
	valid := []byte("M 0001 0000000000000002 0000000000000003")
	tests := []struct {
		name    string
		payload []byte
	}{
		{"empty", nil},
		{"truncated", valid[:benchHeaderLen-1]},
		{"garbage", []byte("hello, this is not a bench message at all\n")},
		{"probe", benchProbe(benchLine, 1)},
		{"uppercase hex", []byte("M 000A 0000000000000002 0000000000000003")},
		{"missing separator", []byte("M 0001-0000000000000002 0000000000000003")},
		{"negative time", []byte("M 0001 0000000000000002 8000000000000003")},
	}
	if _, ok := benchDecode(valid); !ok {
		t.Fatalf("benchDecode(%q) failed; the cases below start from it", valid)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if h, ok := benchDecode(tt.payload); ok {
				t.Errorf("benchDecode(%q) = %+v, true; want false", tt.payload, h)
			}
		})
	}
}

func FuzzBenchDecode(f *testing.F) {
	f.Add([]byte{})                                                      // empty
	f.Add([]byte("M 0001 00000000"))                                     // truncated header
	f.Add([]byte("\x00\xff garbage \n\n"))                               // garbage
	f.Add([]byte("M 0001 0000000000000002 0000000000000003......\n"))    // valid line message
	f.Add([]byte("\x00\x00\x00\x28M 0001 0000000000000002 00000000000")) // truncated len32 frame
	f.Add(benchProbe(benchLine, 42))                                     // probe
	f.Fuzz(func(t *testing.T, data []byte) {
		if h, ok := benchDecode(data); ok {
			// Only the canonical encoding parses: re-encoding gives it back.
			again := make([]byte, benchHeaderLen)
			benchEncode(again, h)
			if !bytes.Equal(again, data[:benchHeaderLen]) {
				t.Errorf("benchDecode(%q) = %+v, which encodes as %q", data, h, again)
			}
		}
		for _, framing := range []string{benchLine, benchLen32} {
			payload, n, err := benchNextFrame(framing, data, 64)
			if n < 0 || n > len(data) || len(payload) > n || (err != nil && n != 0) {
				t.Errorf("benchNextFrame(%s, %q) = %q, %d, %v", framing, data, payload, n, err)
			}
		}
	})
}

func TestBenchNextFrame(t *testing.T) {
	tests := []struct {
		name    string
		framing string
		in      string
		want    string
		n       int
		err     error
	}{
		{"line empty", benchLine, "", "", 0, nil},
		{"line partial", benchLine, "abc", "", 0, nil},
		{"line two", benchLine, "ab\ncd\n", "ab\n", 3, nil},
		{"len32 short header", benchLen32, "\x00\x00", "", 0, nil},
		{"len32 partial", benchLen32, "\x00\x00\x00\x03ab", "", 0, nil},
		{"len32 two", benchLen32, "\x00\x00\x00\x02ab\x00\x00\x00\x01c", "ab", 6, nil},
		{"len32 empty payload", benchLen32, "\x00\x00\x00\x00", "", 4, nil},
		{"len32 too long", benchLen32, "\x00\x01\x00\x00", "", 0, errBenchFrameTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, n, err := benchNextFrame(tt.framing, []byte(tt.in), 1024)
			if string(got) != tt.want || n != tt.n || !errors.Is(err, tt.err) {
				t.Errorf("benchNextFrame(%s, %q) = %q, %d, %v; want %q, %d, %v", tt.framing, tt.in, got, n, err, tt.want, tt.n, tt.err)
			}
		})
	}
}

func TestBenchSeqAccounting(t *testing.T) {
	type counts struct{ Lost, Duplicates, Reordered uint64 }
	evens := make([]uint64, 0, benchMaxHoles+3)
	for i := range benchMaxHoles + 2 {
		evens = append(evens, 2*uint64(i))
	}
	tests := []struct {
		name string
		seqs []uint64
		sent uint64
		want counts
	}{
		{"in order", []uint64{0, 1, 2, 3}, 4, counts{}},
		{"nothing received", nil, 3, counts{Lost: 3}},
		{"gap", []uint64{0, 1, 3}, 4, counts{Lost: 1}},
		{"tail lost", []uint64{0, 1}, 5, counts{Lost: 3}},
		{"reordered", []uint64{0, 2, 1, 3}, 4, counts{Reordered: 1}},
		{"duplicate", []uint64{0, 1, 1, 2}, 3, counts{Duplicates: 1}},
		{"late then duplicate", []uint64{0, 2, 1, 1}, 3, counts{Duplicates: 1, Reordered: 1}},
		{"hole filled from the middle", []uint64{0, 5, 2, 3, 1, 4}, 6, counts{Reordered: 4}},
		{"hole partly filled", []uint64{0, 9, 4, 5}, 10, counts{Lost: 6, Reordered: 2}},
		// One hole more than benchMaxHoles: the oldest, {1}, is forgotten, so
		// a late 1 counts as a duplicate and stays lost.
		{"too many holes", append(evens, 1), 2*benchMaxHoles + 3, counts{Lost: benchMaxHoles + 1, Duplicates: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s benchSeq
			var got counts
			for _, seq := range tt.seqs {
				switch s.observe(seq) {
				case benchDuplicate:
					got.Duplicates++
				case benchReordered:
					got.Reordered++
				}
			}
			got.Lost = s.missing(tt.sent)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("observe(%v), missing(%d) (-want +got):\n%s", tt.seqs, tt.sent, diff)
			}
		})
	}
}

func TestBenchSubscriberHandle(t *testing.T) {
	// alice is a subscriber of a run with two publishers, in its window.
	r := newBenchRun(benchOptions{subs: 1, pubs: 2, size: 64, framing: benchLine})
	alice := &benchSubscriber{run: r, seqs: make([]benchSeq, 2), hist: hdrhistogram.NewPacked(1, benchMaxLatency, 3)}
	frame := benchNewFrame(benchLine, 64)
	msg := func(pub uint16, seq uint64) []byte {
		benchEncode(frame, benchHeader{pub: pub, seq: seq, ts: 1000})
		return bytes.Clone(frame)
	}
	alice.handle(benchProbe(benchLine, 7), 0, 0, 1e6)
	for _, p := range [][]byte{
		msg(0, 0), msg(1, 0), msg(0, 2), msg(0, 1), msg(1, 0), // reordered, duplicate
		msg(2, 0),                // no such publisher
		[]byte("M 0001 short\n"), // corrupt
		frame[:63],               // wrong size
		benchProbe(benchLine, 8), // second probe, ignored
	} {
		alice.handle(p, 2e6, 0, 1e6) // received 1999 µs after it was sent, after the window
	}
	type counts struct {
		Ready                                                   bool
		Received, InWindow, Duplicates, Reordered, Corrupt, Lat int64
		Unready                                                 int64
	}
	got := counts{alice.ready, alice.received, alice.inWindow, alice.duplicates, alice.reordered, alice.corrupt,
		alice.hist.TotalCount(), r.unready.Load()}
	want := counts{Ready: true, Received: 5, Duplicates: 1, Reordered: 1, Corrupt: 3, Lat: 5}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("alice's counts (-want +got):\n%s", diff)
	}
	if p := alice.hist.ValueAtPercentile(50); p != 1999 {
		t.Errorf("latency p50 = %d µs; want 1999", p)
	}
}

func TestBenchPacer(t *testing.T) {
	// Counts only: a fake clock steps through one second in uneven steps.
	const rate, pubs = 10000.0, 3
	pacers := benchPacers(rate, pubs, 0)
	end := int64(time.Second)
	var total uint64
	for i, p := range pacers {
		var sent uint64
		wakes := 0
		for now := p.start; now < end; wakes++ {
			due := p.due(now, end)
			if due < sent {
				t.Fatalf("pacer %d: due(%d) = %d, below the %d already sent", i, now, due, sent)
			}
			sent = due
			next := p.wake(sent, now)
			if next < now+int64(benchMinPause) {
				t.Fatalf("pacer %d: wake(%d, %d) = %d, sooner than benchMinPause", i, sent, now, next)
			}
			now = next + int64(i+1)*7919 // late by a few µs, differently per publisher
		}
		if wakes > int(time.Second/benchMinPause) {
			t.Errorf("pacer %d woke %d times in 1s; want at most one batch per %v", i, wakes, benchMinPause)
		}
		total += sent
	}
	if total != rate {
		t.Errorf("%d publishers sent %d messages in 1s at --rate %v; want %v", pubs, total, rate, rate)
	}
}

func TestBenchRun(t *testing.T) {
	for _, framing := range []string{benchLine, benchLen32} {
		t.Run(framing, func(t *testing.T) {
			t.Parallel()
			opts := benchTestOptions(startBenchHub(t, framing, nil, 0), framing)
			opts.json = true
			var out bytes.Buffer
			res, err := runBench(context.Background(), opts, &out)
			if err != nil {
				t.Fatalf("runBench: %v", err)
			}
			checkBenchClean(t, res)
			if res.Published < 2000 || res.Published > 2500 {
				t.Errorf("published %d messages in 1.2s at 2000 msgs/s", res.Published)
			}
			var fields map[string]any
			if err := json.Unmarshal(out.Bytes(), &fields); err != nil {
				t.Fatalf("--json output %q: %v", out.String(), err)
			}
			for _, k := range []string{"published_msgs_per_s", "delivered_msgs_per_s", "delivered_mb_per_s",
				"latency_p50_us", "latency_p90_us", "latency_p99_us", "latency_p999_us", "latency_max_us",
				"lost", "duplicates", "reordered", "disconnected_subs", "expected_deliveries", "received_deliveries"} {
				if _, ok := fields[k]; !ok {
					t.Errorf("--json output has no %q: %s", k, out.String())
				}
			}
			var decoded benchResult
			if err := json.Unmarshal(out.Bytes(), &decoded); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(res, decoded); diff != "" {
				t.Errorf("--json output differs from the result (-want +got):\n%s", diff)
			}
		})
	}
}

// checkBenchClean fails t unless res shows a run without any fault.
func checkBenchClean(t *testing.T, res benchResult) {
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

func TestBenchRunUnthrottled(t *testing.T) {
	t.Parallel()
	opts := benchTestOptions(startBenchHub(t, benchLine, nil, 0), benchLine)
	opts.rate, opts.duration, opts.warmup = 0, 300*time.Millisecond, 0
	var out bytes.Buffer
	res, err := runBench(context.Background(), opts, &out)
	if err != nil {
		t.Fatalf("runBench: %v", err)
	}
	checkBenchClean(t, res)
	for _, want := range []string{"unthrottled", "0 lost", "0/3 subs disconnected", "from the written send time"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table has no %q:\n%s", want, out.String())
		}
	}
}

func TestBenchTLS(t *testing.T) {
	t.Parallel()
	serverConfig, caFile := benchTestCert(t)
	opts := benchTestOptions(startBenchHub(t, benchLen32, serverConfig, 0), benchLen32)
	opts.duration, opts.warmup = 300*time.Millisecond, 0
	var err error
	if opts.tlsConfig, err = clientTLSConfig(opts.addr, caFile, "", "", false); err != nil {
		t.Fatal(err)
	}
	res, err := runBench(context.Background(), opts, io.Discard)
	if err != nil {
		t.Fatalf("runBench: %v", err)
	}
	checkBenchClean(t, res)

	// Without the CA the hub's certificate is unknown.
	opts.tlsConfig, _ = clientTLSConfig(opts.addr, "", "", "", false)
	if _, err := runBench(context.Background(), opts, io.Discard); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("runBench without --tls-ca = %v; want a certificate error", err)
	}
}

// benchTestCert returns a server TLS configuration for 127.0.0.1 and the path
// of a PEM file holding its self-signed certificate.
func benchTestCert(t *testing.T) (*tls.Config, string) {
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
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, caFile
}

func TestBenchDisconnect(t *testing.T) {
	t.Parallel()
	// The hub closes every subscriber after 100 messages; the publishers go on.
	opts := benchTestOptions(startBenchHub(t, benchLine, nil, 100), benchLine)
	opts.duration, opts.warmup = 300*time.Millisecond, 0
	res, err := runBench(context.Background(), opts, io.Discard)
	if err != nil {
		t.Fatalf("runBench: %v", err)
	}
	if res.DisconnectedSubs != 3 || !strings.HasPrefix(res.Error, "subscriber ") || res.Received >= res.Expected {
		t.Errorf("runBench = %+v; want 3 disconnected subscribers and fewer deliveries than expected", res)
	}
	if ok, why := res.sustained(time.Hour); ok || !strings.Contains(why, "disconnected") {
		t.Errorf("sustained() = %v, %q; want false, disconnected", ok, why)
	}
}

func TestBenchDialClosedPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = runBench(context.Background(), benchTestOptions(addr, benchLine), io.Discard)
	if want := fmt.Sprintf("bench: dial %s: connection refused", addr); err == nil || err.Error() != want {
		t.Fatalf("runBench(%s) = %v; want %q", addr, err, want)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("runBench(%s) = %v; want errors.Is ECONNREFUSED", addr, err)
	}
}

func TestBenchCancel(t *testing.T) {
	t.Parallel()
	opts := benchTestOptions(startBenchHub(t, benchLine, nil, 0), benchLine)
	opts.duration = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := runBench(ctx, opts, io.Discard)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("runBench = %v; want %v", err, context.DeadlineExceeded)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("runBench returned %v after its context ended", d-300*time.Millisecond)
	}
}

func TestBenchFindMax(t *testing.T) {
	t.Parallel()
	// Through real runs: the wiring only, since a loaded test machine makes
	// any verdict possible.
	opts := benchTestOptions(startBenchHub(t, benchLine, nil, 0), benchLine)
	opts.duration, opts.warmup, opts.rate, opts.maxProbes = 200*time.Millisecond, 50*time.Millisecond, 500, 2
	var out bytes.Buffer
	if _, err := benchFindMax(context.Background(), opts, &out); err != nil {
		t.Fatalf("benchFindMax: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "probe 1/2: offered 500 msgs/s: published ") ||
		!strings.HasPrefix(lines[1], "probe 2/2: offered ") || !strings.HasPrefix(lines[2], "capacity: ") {
		t.Fatalf("benchFindMax printed:\n%s\nwant two probes and the capacity", out.String())
	}
}

func TestBenchSearch(t *testing.T) {
	// A simulated hub sustains up to 1700 msgs/s, with p99 growing with the rate.
	measure := func(_ context.Context, o benchOptions) (benchResult, error) {
		res := benchResult{Rate: o.rate, Subs: o.subs, PublishedMsgsPerS: o.rate, DeliveryRatio: 1,
			DeliveredMsgsPerS: o.rate * float64(o.subs), LatencyP99Us: int64(o.rate)}
		if o.rate > 1700 {
			res.Lost = 1
		}
		return res, nil
	}
	tests := []struct {
		name   string
		first  float64
		slo    time.Duration
		probes int
		rates  []float64 // offered by each probe
		want   float64   // capacity, msgs/s
	}{
		{"loss bounds it", 0, time.Second, 12, []float64{1000, 2000, 1500, 1750, 1625, 1688}, 1688},
		{"slo bounds it", 0, 1200 * time.Microsecond, 12, []float64{1000, 2000, 1500, 1250, 1125, 1188}, 1188},
		{"probe budget", 0, time.Second, 3, []float64{1000, 2000, 1500}, 1500},
		{"first probe fails", 4000, time.Second, 4, []float64{4000, 2000, 1000, 1500}, 1500},
		{"nothing sustained", 4000, time.Microsecond, 2, []float64{4000, 2000}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := benchOptions{subs: 3, rate: tt.first, slo: tt.slo, maxProbes: tt.probes}
			var out bytes.Buffer
			c, err := benchSearch(context.Background(), opts, &out, measure)
			if err != nil {
				t.Fatal(err)
			}
			var rates []float64
			for _, p := range c.Probes {
				rates = append(rates, p.Rate)
			}
			if diff := cmp.Diff(tt.rates, rates); diff != "" {
				t.Errorf("offered rates (-want +got):\n%s", diff)
			}
			if c.CapacityMsgsPerS != tt.want || c.CapacityDeliveriesPerS != 3*tt.want {
				t.Errorf("capacity %v msgs/s, %v deliveries/s; want %v, %v", c.CapacityMsgsPerS, c.CapacityDeliveriesPerS, tt.want, 3*tt.want)
			}
			last := fmt.Sprintf("capacity: %.0f msgs/s published, %.0f deliveries/s", tt.want, 3*tt.want)
			if !strings.Contains(out.String(), last) || strings.Count(out.String(), "\nprobe ") != len(tt.rates)-1 {
				t.Errorf("benchSearch printed:\n%s\nwant %d probe lines and %q", out.String(), len(tt.rates), last)
			}
		})
	}
}

func TestBenchSearchJSON(t *testing.T) {
	measure := func(_ context.Context, o benchOptions) (benchResult, error) {
		return benchResult{Rate: o.rate, PublishedMsgsPerS: o.rate, DeliveredMsgsPerS: 2 * o.rate, DeliveryRatio: 1}, nil
	}
	opts := benchOptions{subs: 2, rate: 100, slo: time.Second, maxProbes: 2, json: true}
	var out bytes.Buffer
	if _, err := benchSearch(context.Background(), opts, &out, measure); err != nil {
		t.Fatal(err)
	}
	var got struct {
		SLOMs    float64 `json:"slo_ms"`
		Capacity float64 `json:"capacity_msgs_per_s"`
		Probes   []struct {
			Rate      float64 `json:"rate"`
			Published float64 `json:"published_msgs_per_s"`
			Sustained bool    `json:"sustained"`
		} `json:"probes"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("--find-max --json output %q: %v", out.String(), err)
	}
	if got.SLOMs != 1000 || got.Capacity != 200 || len(got.Probes) != 2 || !got.Probes[1].Sustained || got.Probes[1].Published != 200 {
		t.Errorf("--find-max --json output %s; want 2 sustained probes at 100 and 200 msgs/s", out.String())
	}
}

func TestBenchNextRate(t *testing.T) {
	tests := []struct {
		name         string
		lo, hi, want float64
	}{
		{"first", 0, 0, 1000},
		{"double", 4000, 0, 8000},
		{"bisect", 4000, 8000, 6000},
		{"first failed", 0, 1000, 500},
		{"close enough", 9600, 10000, 0},
		{"nothing left", 0, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := benchNextRate(1000, tt.lo, tt.hi); got != tt.want {
				t.Errorf("benchNextRate(1000, %v, %v) = %v; want %v", tt.lo, tt.hi, got, tt.want)
			}
		})
	}
}

func TestBenchFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // in the error
	}{
		{"size below header", []string{"--size", "40"}, "--size must be at least 41 with line framing"},
		{"len32 size below header", []string{"--framing", "len32", "--size", "39"}, "--size must be at least 40 with len32"},
		{"size too large", []string{"--size", "2000000"}, "--size must be at most"},
		{"framing", []string{"--framing", "raw"}, "--framing"},
		{"subs", []string{"--subs", "0"}, "--subs"},
		{"pubs", []string{"--pubs", "0"}, "--pubs"},
		{"rate", []string{"--rate", "-1"}, "--rate"},
		{"duration", []string{"--duration", "0s"}, "--duration"},
		{"addr", []string{"--addr", "localhost"}, "--addr"},
		{"slo", []string{"--find-max", "--slo", "0s"}, "--slo"},
		{"tls flag without tls", []string{"--tls-insecure"}, "--tls-insecure needs --tls"},
		{"missing ca", []string{"--tls", "--tls-ca", "/nonexistent/ca.pem"}, "--tls-ca"},
		{"cert without key", []string{"--tls", "--tls-cert", "cert.pem"}, "--tls-key"},
		{"argument", []string{"extra"}, "no arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := &cli.App{Commands: []*cli.Command{benchCommand()}, Writer: io.Discard, ErrWriter: io.Discard}
			err := app.Run(append([]string{"echohub", "bench"}, tt.args...))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("echohub bench %v = %v; want an error with %q", tt.args, err, tt.want)
			}
		})
	}
}
