package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// BenchmarkFairness measures how long the messages of nine clients sending
// 100 msg/s each take to reach three readers while a tenth client floods the
// hub as fast as it can: with --rate on every client (the flooder is slowed
// to 1000 msg/s) and without (the hub alone). One iteration is one round of
// nine messages, one tick of 10ms, so ns/op is the tick (more when the
// machine cannot keep the pace); the figures are the reported p50-ms, p99-ms
// and max-ms, and flood-msgs/s, the flood reaching each reader. Unlike the
// other benchmarks it reports no allocations or bytes per op: the rounds are
// paced, not timed, and the server's allocations under the flood would be
// charged to them.
//
//	go test -run '^$' -bench Fairness -benchtime 500x .
func BenchmarkFairness(b *testing.B) {
	for _, rate := range []float64{0, 1000} {
		b.Run(fmt.Sprintf("rate=%v", rate), func(b *testing.B) {
			cfg := fairnessConfig()
			cfg.rate = rate
			rig := startFairness(b, cfg)
			tick := time.NewTicker(fairnessTick)
			defer tick.Stop()
			for b.Loop() {
				<-tick.C
				rig.round(b)
			}
			res := rig.finish(b)
			b.Logf("--rate %v: %s", rate, res)
			b.ReportMetric(res.p50.Seconds()*1e3, "p50-ms")
			b.ReportMetric(res.p99.Seconds()*1e3, "p99-ms")
			b.ReportMetric(res.max.Seconds()*1e3, "max-ms")
			b.ReportMetric(res.floodRate, "flood-msgs/s")
		})
	}
}

const (
	fairnessTick    = 10 * time.Millisecond // each sender sends once a tick: 100 msg/s
	fairnessSenders = 9
	fairnessReaders = 3
	fairnessSize    = 64 // bytes per message, '\n' included
)

// fairnessConfig is the server of the fairness measurement: the defaults,
// on loopback, with the kernel's socket buffers.
func fairnessConfig() config {
	cfg := testConfig()
	cfg.logLevel = zerolog.InfoLevel
	cfg.sendBuffer = 0
	return cfg
}

// A fairnessRig is a test server with a flooder, nine senders driven by
// round, and readers that time the senders' messages. The flooder and the
// senders read and discard what they are sent, so that none of them is a
// slow client.
type fairnessRig struct {
	ts      *testServer
	base    time.Time // a message carries its send time as an offset from base
	flood   net.Conn
	senders []net.Conn
	readers []*fairnessReader
	rounds  int
	stop    chan struct{}  // closed by finish: the flooder stops
	wg      sync.WaitGroup // the flooder and the discarders
	reading sync.WaitGroup // the readers
}

// A fairnessReader is one reader's findings, written by its goroutine and
// read after rig.reading is done.
type fairnessReader struct {
	conn      net.Conn
	base      time.Time // the rig's
	latencies []time.Duration
	flood     int // flood messages read
	err       error
}

// startFairness starts the server and the clients of a fairness run.
// Cleanup closes the clients, then shuts the server down.
func startFairness(tb testing.TB, cfg config) *fairnessRig {
	tb.Helper()
	ts := startTestServer(tb, cfg)
	rig := &fairnessRig{ts: ts, base: time.Now(), stop: make(chan struct{})}
	dial := func() net.Conn {
		conn, err := net.DialTimeout("tcp", ts.addr, ioTimeout)
		if err != nil {
			tb.Fatal(err)
		}
		return conn
	}
	var conns []net.Conn
	tb.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
		rig.wg.Wait()
		rig.reading.Wait()
	})
	rig.flood = dial()
	conns = append(conns, rig.flood)
	for range fairnessSenders {
		rig.senders = append(rig.senders, dial())
	}
	conns = append(conns, rig.senders...)
	for range fairnessReaders {
		r := &fairnessReader{conn: dial(), base: rig.base}
		rig.readers = append(rig.readers, r)
		conns = append(conns, r.conn)
	}
	ts.waitClients(tb, len(conns))

	for _, c := range append([]net.Conn{rig.flood}, rig.senders...) {
		rig.wg.Go(func() { io.Copy(io.Discard, c) })
	}
	for _, r := range rig.readers {
		rig.reading.Go(r.read)
	}
	rig.wg.Go(func() {
		msg := append(bytes.Repeat([]byte("f"), fairnessSize-1), '\n')
		buf := bytes.Repeat(msg, 1024)
		for {
			select {
			case <-rig.stop:
				return
			default:
			}
			if _, err := rig.flood.Write(buf); err != nil {
				return // stopped by finish's deadline, or closed
			}
		}
	})
	return rig
}

// round sends one message from each sender, stamped with its send time.
func (rig *fairnessRig) round(tb testing.TB) {
	tb.Helper()
	for i, c := range rig.senders {
		msg := fmt.Appendf(make([]byte, 0, fairnessSize), "s%d %d ", i, rig.rounds)
		msg = strconv.AppendInt(msg, int64(time.Since(rig.base)), 10)
		msg = append(msg, bytes.Repeat([]byte(" "), fairnessSize-1-len(msg))...)
		msg = append(msg, '\n')
		c.SetWriteDeadline(time.Now().Add(ioTimeout))
		if _, err := c.Write(msg); err != nil {
			tb.Fatalf("sender %d: %v", i, err)
		}
	}
	rig.rounds++
}

// read reads everything, timing the senders' messages, until it has seen an
// end message from every sender: by then it has all their messages, since
// each client's messages arrive in the order it sent them.
func (r *fairnessReader) read() {
	br := bufio.NewReaderSize(r.conn, 64<<10)
	for ends := 0; ends < fairnessSenders; {
		r.conn.SetReadDeadline(time.Now().Add(ioTimeout))
		l, err := br.ReadSlice('\n')
		if err != nil {
			r.err = err
			return
		}
		switch l[0] {
		case 'f':
			r.flood++
		case 'e':
			ends++
		case 's':
			// "s<i> <round> <sent>", padded with spaces.
			f := bytes.Fields(l)
			sent, err := strconv.ParseInt(string(f[2]), 10, 64)
			if err != nil {
				r.err = fmt.Errorf("bad message %q: %w", l, err)
				return
			}
			r.latencies = append(r.latencies, time.Since(r.base)-time.Duration(sent))
		}
	}
}

// A fairnessResult is what one run measured.
type fairnessResult struct {
	samples       int
	p50, p99, max time.Duration // latency of the senders' messages
	floodRate     float64       // flood messages per second reaching each reader
	closes        uint64        // clients closed during the run, for any reason
}

func (r fairnessResult) String() string {
	return fmt.Sprintf("%d samples: p50 %v, p99 %v, max %v; flood %.0f msgs/s to each reader; %d closes",
		r.samples, r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond),
		r.max.Round(10*time.Microsecond), r.floodRate, r.closes)
}

// finish stops the flood, sends every sender's end message, waits for the
// readers and returns what they measured.
func (rig *fairnessRig) finish(tb testing.TB) fairnessResult {
	tb.Helper()
	elapsed := time.Since(rig.base)
	close(rig.stop)
	rig.flood.SetWriteDeadline(time.Now()) // ends a write blocked by push-back
	for i, c := range rig.senders {
		c.SetWriteDeadline(time.Now().Add(ioTimeout))
		if _, err := io.WriteString(c, "e\n"); err != nil {
			tb.Fatalf("sender %d: %v", i, err)
		}
	}
	rig.reading.Wait()
	var res fairnessResult
	var all []time.Duration
	for i, r := range rig.readers {
		if r.err != nil {
			tb.Fatalf("reader %d: %v", i, r.err)
		}
		if got, want := len(r.latencies), rig.rounds*fairnessSenders; got != want {
			tb.Fatalf("reader %d: got %d messages from the senders; want %d", i, got, want)
		}
		all = append(all, r.latencies...)
		res.floodRate += float64(r.flood) / elapsed.Seconds() / fairnessReaders
	}
	for r := range numCloseReasons {
		res.closes += rig.ts.closes(r)
	}
	if len(all) == 0 {
		return res
	}
	slices.Sort(all)
	res.samples = len(all)
	res.p50, res.p99, res.max = all[len(all)/2], all[len(all)*99/100], all[len(all)-1]
	return res
}
