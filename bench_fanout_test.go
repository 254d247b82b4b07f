package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// BenchmarkFanout measures the whole path of one published line: a
// publisher's socket, the reader, the hub, every client's writer and socket,
// to clients readers on loopback. One op is one message published; b.SetBytes
// counts its deliveries, so MB/s is the delivered throughput.
func BenchmarkFanout(b *testing.B) {
	for _, clients := range []int{10, 100, 1000} {
		for _, size := range []int{64, 1024} {
			b.Run(fmt.Sprintf("clients=%d/size=%d", clients, size), func(b *testing.B) {
				benchmarkFanout(b, clients, size)
			})
		}
	}
}

// startFanout runs a server with --exclude-sender and connects a publisher
// and clients readers to it; the benchmark's cleanup closes them all.
func startFanout(b *testing.B, clients int) (pub net.Conn, readers []net.Conn) {
	b.Helper()
	cfg := defaultConfig()
	cfg.excludeSender = true // the publisher does not read
	s, addr := startBenchServer(b, cfg)
	b.Cleanup(func() { s.Shutdown(context.Background()) })
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		return c
	}
	pub = dial()
	readers = make([]net.Conn, clients)
	for i := range readers {
		readers[i] = dial()
	}
	for s.m.clients.Load() != int64(clients+1) {
		time.Sleep(time.Millisecond)
	}
	return pub, readers
}

func benchmarkFanout(b *testing.B, clients, size int) {
	pub, readers := startFanout(b, clients)
	driveFanout(b, pub, readers, size, int64(size))
}

// driveFanout has pub publish b.N lines of size bytes, as fast as the server
// takes them, and waits until every reader has read b.N times wire bytes
// (what one line costs on the readers' wire); it reports deliveries/s.
func driveFanout(b *testing.B, pub net.Conn, readers []net.Conn, size int, wire int64) {
	chunk := []byte(strings.Repeat(strings.Repeat("x", size-1)+"\n", max(1, 64<<10/size)))
	perChunk := len(chunk) / size

	bufs := make([][]byte, len(readers)) // before the timer: allocations are the server's alone
	for i := range bufs {
		bufs[i] = make([]byte, 64<<10)
	}

	b.SetBytes(int64(size * len(readers)))
	b.ReportAllocs()
	b.ResetTimer()
	want := int64(b.N) * wire
	var wg sync.WaitGroup
	for i, r := range readers {
		wg.Go(func() {
			buf := bufs[i]
			for got := int64(0); got < want; {
				r.SetReadDeadline(time.Now().Add(time.Minute))
				n, err := r.Read(buf)
				if err != nil {
					b.Errorf("reader: %v after %d of %d bytes", err, got, want)
					return
				}
				got += int64(n)
			}
		})
	}
	for left := b.N; left > 0; left -= perChunk {
		if _, err := pub.Write(chunk[:min(left, perChunk)*size]); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)*float64(len(readers))/b.Elapsed().Seconds(), "deliveries/s")
}

// BenchmarkFanoutRound measures the latency of one fan-out round: one line
// published on an idle hub until every one of clients readers on loopback has
// read it. It reports the p50 and p99 over the rounds, so that a change that
// delays light traffic (a batching window, say) shows here.
func BenchmarkFanoutRound(b *testing.B) {
	for _, clients := range []int{100, 1000} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			benchmarkFanoutRound(b, clients)
		})
	}
}

func benchmarkFanoutRound(b *testing.B, clients int) {
	const size = 64
	pub, readers := startFanout(b, clients)
	line := []byte(strings.Repeat("x", size-1) + "\n")
	var (
		got   atomic.Int64
		round = make(chan struct{}) // a reader sends when the round's last line is read
		wg    sync.WaitGroup
	)
	rounds := int64(b.N)
	durs := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for _, r := range readers {
		wg.Go(func() {
			buf := make([]byte, size)
			for n := int64(1); n <= rounds; n++ {
				r.SetReadDeadline(time.Now().Add(time.Minute))
				if _, err := io.ReadFull(r, buf); err != nil {
					b.Errorf("reader: %v in round %d", err, n)
					return
				}
				if got.Add(1) == n*int64(clients) {
					round <- struct{}{}
				}
			}
		})
	}
	for range b.N {
		start := time.Now()
		if _, err := pub.Write(line); err != nil {
			b.Fatal(err)
		}
		select {
		case <-round:
		case <-time.After(time.Minute):
			b.Fatal("a round took over a minute")
		}
		durs = append(durs, time.Since(start))
	}
	wg.Wait()
	b.StopTimer()
	slices.Sort(durs)
	b.ReportMetric(float64(durs[len(durs)/2].Microseconds()), "p50-us")
	b.ReportMetric(float64(durs[len(durs)*99/100].Microseconds()), "p99-us")
}

// BenchmarkFramer measures cutting messages out of a stream, per framing.
func BenchmarkFramer(b *testing.B) {
	for _, tc := range []struct {
		framing framing
		size    int
	}{{framingLine, 64}, {framingLine, 1024}, {framingLen32, 64}, {framingLen32, 1024}} {
		b.Run(fmt.Sprintf("framing=%s/size=%d", tc.framing, tc.size), func(b *testing.B) {
			msg := bytes.Repeat([]byte("y"), tc.size)
			if tc.framing == framingLine {
				msg[tc.size-1] = '\n'
			} else {
				copy(msg, []byte{0, 0, byte((tc.size - 4) >> 8), byte(tc.size - 4)})
			}
			stream := bytes.Repeat(msg, 1024)
			r := &loopReader{data: stream}
			f := newFramer(r, tc.framing, 64<<10, 256)
			b.SetBytes(int64(tc.size))
			b.ReportAllocs()
			for n := 0; b.Loop(); {
				if n == 0 {
					_, k, err := f.next()
					if err != nil {
						b.Fatal(err)
					}
					n = k
				}
				n--
			}
		})
	}
}

// loopReader returns data over and over, in reads of up to 64 KiB.
type loopReader struct {
	data []byte
	off  int
}

func (r *loopReader) Read(p []byte) (int, error) {
	n := copy(p, r.data[r.off:])
	r.off = (r.off + n) % len(r.data)
	return n, nil
}

var _ io.Reader = (*loopReader)(nil)

// BenchmarkIdleConnections reports what one idle client costs the server's
// heap and goroutine stacks, per connection, before and after one message.
// It runs the clients in this process too; their side is kept small (no
// goroutines, raw conns) and measured separately, then subtracted.
func BenchmarkIdleConnections(b *testing.B) {
	const conns = 2000
	for b.Loop() {
		s, addr := startBenchServer(b, defaultConfig())
		before := memNow()
		clients := make([]net.Conn, conns)
		for i := range clients {
			var err error
			if clients[i], err = net.Dial("tcp", addr); err != nil {
				b.Fatal(err)
			}
		}
		for s.m.clients.Load() != conns {
			time.Sleep(time.Millisecond)
		}
		idle := memNow()
		clients[0].Write([]byte("one message to everyone\n"))
		for s.m.messagesDelivered.Load() != conns {
			time.Sleep(time.Millisecond)
		}
		after := memNow()
		b.ReportMetric(float64(idle.heap-before.heap)/conns, "heap-B/conn")
		b.ReportMetric(float64(idle.stack-before.stack)/conns, "stack-B/conn")
		b.ReportMetric(float64(after.heap-before.heap)/conns, "heap-B/conn-after-msg")
		b.ReportMetric(float64(after.stack-before.stack)/conns, "stack-B/conn-after-msg")
		for _, c := range clients {
			c.Close()
		}
		s.Shutdown(context.Background())
	}
}

var memGCs = 1

type memSample struct{ heap, stack uint64 }

// memNow returns the live heap and the stack memory in use, after a GC.
func memNow() memSample {
	for range memGCs {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{heap: ms.HeapAlloc, stack: ms.StackInuse}
}

// BenchmarkChurn reports what 600 connect, send, disconnect cycles leave
// behind in the server's heap, goroutines and open connections: all three
// should come back to where they were.
func BenchmarkChurn(b *testing.B) {
	const cycles = 600
	for b.Loop() {
		s, addr := startBenchServer(b, defaultConfig())
		settle := func() memSample {
			for {
				s.mu.Lock()
				n := len(s.conns)
				s.mu.Unlock()
				if n == 0 {
					return memNow()
				}
				time.Sleep(time.Millisecond)
			}
		}
		warm := func(n int) {
			for i := range n {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				fmt.Fprintf(c, "cycle %d\n", i)
				c.Close()
			}
		}
		warm(50) // pools and maps reach their working size
		before, goroutines := settle(), runtime.NumGoroutine()
		warm(cycles)
		after := settle()
		b.ReportMetric(float64(int64(after.heap)-int64(before.heap)), "heap-B-growth")
		b.ReportMetric(float64(runtime.NumGoroutine()-goroutines), "goroutines-growth")
		s.Shutdown(context.Background())
	}
}

// startBenchServer runs a server for cfg on 127.0.0.1:0, logging nothing,
// and returns it and its address; the caller shuts it down.
func startBenchServer(b *testing.B, cfg config) (*server, string) {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := newServer(cfg, zerolog.Nop())
	go s.Serve(ln)
	return s, ln.Addr().String()
}

// BenchmarkFanoutWS is BenchmarkFanout with WebSocket readers: the same
// published lines, each delivered as one text message. The readers are raw
// connections that count bytes (a 2 or 4 byte frame header and the line
// without its '\n'), so the client side costs no more than over TCP.
func BenchmarkFanoutWS(b *testing.B) {
	for _, clients := range []int{100, 1000} {
		for _, size := range []int{64, 1024} {
			b.Run(fmt.Sprintf("clients=%d/size=%d", clients, size), func(b *testing.B) {
				benchmarkFanoutWS(b, clients, size)
			})
		}
	}
}

func benchmarkFanoutWS(b *testing.B, clients, size int) {
	cfg := defaultConfig()
	cfg.excludeSender = true // the publisher does not read
	cfg.webListen = "127.0.0.1:0"
	cfg.keepalive = 0
	s, addr := startBenchServer(b, cfg)
	web, err := listenWeb(s)
	if err != nil {
		b.Fatal(err)
	}
	go web.serve()
	b.Cleanup(func() {
		s.Shutdown(context.Background())
		web.shutdown()
	})
	pub, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pub.Close() })
	readers := make([]net.Conn, clients)
	for i := range readers {
		readers[i] = dialRawWS(b, web.addr())
	}
	for s.m.clients.Load() != int64(clients+1) {
		time.Sleep(time.Millisecond)
	}
	driveFanout(b, pub, readers, size, int64(len(appendFrame(nil, 0, make([]byte, size-1)))))
}
