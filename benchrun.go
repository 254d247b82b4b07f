package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sync/errgroup"
)

// Bounds of one run. Every wait in a run is bounded by one of these, by the
// schedule, or by ctx.
const (
	benchDialTimeout     = 5 * time.Second        // per connection, TLS handshake included
	benchDialConcurrency = 8                      // connections dialled at once
	benchReadyTimeout    = 10 * time.Second       // for every subscriber to see a probe
	benchProbeEvery      = 50 * time.Millisecond  // probe resend interval while waiting
	benchStartDelay      = 10 * time.Millisecond  // from the barrier to the first message
	benchFlushGrace      = 2 * time.Second        // a publisher's last flush may take this long after the end
	benchDrainIdle       = 2 * time.Second        // the drain stops after this long without a delivery
	benchDrainMax        = 10 * time.Second       // and after this long in any case
	benchDrainPoll       = 10 * time.Millisecond  // how often the drain looks at the counters
	benchFlushEvery      = 256                    // unthrottled publishers flush after this many messages
	benchReadBuffer      = 32 << 10               // a subscriber's read buffer, at least two messages
	benchWriteBuffer     = 64 << 10               // a publisher's bufio.Writer, at least one message
	benchMaxLatency      = int64(time.Hour / 1e3) // in µs; larger latencies are recorded as this
)

// A benchRun is one timed run: its connections and the measurement window
// they share. runBench makes one per run, and a --find-max search one per
// probe.
type benchRun struct {
	// Immutable after newBenchRun.
	opts     benchOptions
	wire     int // bytes per message on the connection
	probeLen int // payload bytes of a probe, '\n' included in line framing

	// Set by dialAll, then immutable.
	subs []*benchSubscriber
	pubs []*benchPublisher

	// Set before the first message is sent. They are MaxInt64 until then, so
	// that a readLoop counts nothing in the window early.
	winStart atomic.Int64 // on benchNow's clock: warmup ends, measurement starts
	winEnd   atomic.Int64 // measurement and publishing end

	closing  atomic.Bool   // set before bench closes the connections: a read error after it is no disconnect
	unready  atomic.Int64  // subscribers that have not seen a probe
	ready    chan struct{} // closed by the readLoop that brings unready to 0
	draining chan struct{} // closed by stopProgress when publishing is over
	drainOne sync.Once     // closes draining

	wg sync.WaitGroup // every goroutine the run starts; close waits for it
}

// newBenchRun prepares a run of opts, which must be valid.
func newBenchRun(opts benchOptions) *benchRun {
	r := &benchRun{
		opts:     opts,
		wire:     benchWireSize(opts.framing, opts.size),
		probeLen: benchProbeLen,
		ready:    make(chan struct{}),
		draining: make(chan struct{}),
	}
	if opts.framing == benchLine {
		r.probeLen++
	}
	r.winStart.Store(math.MaxInt64)
	r.winEnd.Store(math.MaxInt64)
	r.unready.Store(int64(opts.subs))
	return r
}

// benchMeasure performs one run and returns its figures. It prints nothing
// but the progress lines. Every connection is closed and every goroutine has
// returned when it returns.
func benchMeasure(ctx context.Context, opts benchOptions) (benchResult, error) {
	r := newBenchRun(opts)
	defer r.close()
	if err := r.dialAll(ctx); err != nil {
		return benchResult{}, err
	}
	// On cancel, unblock every read and write at once. The deferred stop
	// waits for abort if it has started, so that it cannot outlive the run.
	aborted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(aborted)
		r.abort()
	})
	defer func() {
		if !stop() {
			<-aborted
		}
	}()
	for _, s := range r.subs {
		r.wg.Go(s.readLoop)
	}
	for _, p := range r.pubs {
		// The hub echoes to the sender: drain it so the publisher is never a
		// slow client. It returns when close closes the connection.
		r.wg.Go(func() { _, _ = io.Copy(io.Discard, p.conn) })
	}
	if err := r.barrier(ctx); err != nil {
		return benchResult{}, err
	}

	// Schedule: warmup [t0, ws), measurement [ws, we); publishing stops at we.
	t0 := benchNow() + int64(benchStartDelay)
	ws := t0 + int64(opts.warmup)
	we := ws + int64(opts.duration)
	r.winStart.Store(ws)
	r.winEnd.Store(we)
	if opts.progress != nil {
		r.wg.Go(func() { r.progressLoop(opts.progress) })
	}
	var pacers []benchPacer
	if opts.rate > 0 {
		pacers = benchPacers(opts.rate, opts.pubs, t0)
	}
	var pubs sync.WaitGroup
	for i, p := range r.pubs {
		var pacer *benchPacer
		if pacers != nil {
			pacer = &pacers[i]
		}
		pubs.Go(func() { p.publish(ctx, pacer, t0, ws, we) })
	}
	pubs.Wait()
	r.stopProgress()
	if err := ctx.Err(); err != nil {
		return benchResult{}, fmt.Errorf("bench: %w", err)
	}
	var published int64
	for _, p := range r.pubs {
		published += int64(p.sent)
	}
	r.drain(ctx, published)
	if err := ctx.Err(); err != nil {
		return benchResult{}, fmt.Errorf("bench: %w", err)
	}
	r.close()
	return r.result(), nil
}

// dial opens one connection to the server, TLS if configured.
func (r *benchRun) dial(ctx context.Context) (net.Conn, error) {
	d := &net.Dialer{Timeout: benchDialTimeout}
	var c net.Conn
	var err error
	if r.opts.tlsConfig != nil {
		c, err = (&tls.Dialer{NetDialer: d, Config: r.opts.tlsConfig}).DialContext(ctx, "tcp", r.opts.addr)
	} else {
		c, err = d.DialContext(ctx, "tcp", r.opts.addr)
	}
	if err != nil {
		return nil, fmt.Errorf("bench: dial %s: %w", r.opts.addr, benchDialCause(err))
	}
	return c, nil
}

// benchDialCause strips what a dial error repeats of "dial ADDR", leaving
// its cause ("connection refused"), which errors.Is still sees through.
func benchDialCause(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		err = op.Err
	}
	var sys *os.SyscallError
	if errors.As(err, &sys) {
		err = sys.Err
	}
	return err
}

// dialAll connects every subscriber, then every publisher. On error it
// leaves what it opened for close.
func (r *benchRun) dialAll(ctx context.Context) error {
	conns := make([]net.Conn, r.opts.subs+r.opts.pubs)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(benchDialConcurrency)
	for i := range conns {
		g.Go(func() error {
			c, err := r.dial(gctx)
			conns[i] = c
			return err
		})
	}
	err := g.Wait()
	for i, c := range conns {
		if c == nil {
			continue
		}
		if i < r.opts.subs {
			r.subs = append(r.subs, &benchSubscriber{
				run:  r,
				conn: c,
				done: make(chan struct{}),
				seqs: make([]benchSeq, r.opts.pubs),
				// 3 significant digits: 0.1% resolution. Packed (sparse) since
				// a dense histogram of this range is ~190 KB per subscriber.
				hist: hdrhistogram.NewPacked(1, benchMaxLatency, 3),
			})
		} else {
			r.pubs = append(r.pubs, &benchPublisher{id: len(r.pubs), run: r, conn: c})
		}
	}
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("bench: %w", ctx.Err())
	}
	return err
}

// barrier makes the first publisher send probes until every subscriber has
// seen one: then the server has registered them all, and every message sent
// after barrier returns reaches every subscriber.
func (r *benchRun) barrier(ctx context.Context) error {
	timeout := time.NewTimer(benchReadyTimeout)
	defer timeout.Stop()
	tick := time.NewTicker(benchProbeEvery)
	defer tick.Stop()
	pub := r.pubs[0]
	if err := pub.conn.SetWriteDeadline(time.Now().Add(benchReadyTimeout)); err != nil {
		return fmt.Errorf("bench: probe: %w", err)
	}
	for nonce := uint64(0); ; nonce++ {
		if _, err := pub.conn.Write(benchProbe(r.opts.framing, nonce)); err != nil {
			return fmt.Errorf("bench: probe: %w", err)
		}
		select {
		case <-r.ready:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("bench: %w", ctx.Err())
		case <-timeout.C:
			return fmt.Errorf("bench: %d of %d subscribers saw no probe within %v",
				r.unready.Load(), r.opts.subs, benchReadyTimeout)
		case <-tick.C:
		}
		for i, s := range r.subs {
			select {
			case <-s.done:
				return fmt.Errorf("bench: subscriber %d disconnected before the run: %w", i, s.err)
			default:
			}
		}
	}
}

// drain waits until every subscriber still connected has received published
// messages, deliveries stall for benchDrainIdle, benchDrainMax passes, or ctx
// is done.
func (r *benchRun) drain(ctx context.Context, published int64) {
	tick := time.NewTicker(benchDrainPoll)
	defer tick.Stop()
	start := time.Now()
	lastSum, lastChange := int64(-1), start
	for time.Since(start) < benchDrainMax && time.Since(lastChange) < benchDrainIdle {
		var sum int64
		complete := true
		for _, s := range r.subs {
			n := s.count.Load()
			sum += n
			select {
			case <-s.done:
			default:
				complete = complete && n >= published
			}
		}
		if complete {
			return
		}
		if sum != lastSum {
			lastSum, lastChange = sum, time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// progressLoop prints one line per second to w until publishing is over.
func (r *benchRun) progressLoop(w io.Writer) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastPub, lastSub uint64
	for secs := 1; ; secs++ {
		select {
		case <-r.draining:
			return
		case <-tick.C:
		}
		var pub, sub uint64
		var gone int
		for _, p := range r.pubs {
			pub += p.count.Load()
		}
		for _, s := range r.subs {
			sub += uint64(s.count.Load())
			select {
			case <-s.done:
				gone++
			default:
			}
		}
		fmt.Fprintf(w, "bench: %ds: published %d msgs/s, delivered %d msgs/s, %d of %d subscribers disconnected\n",
			secs, pub-lastPub, sub-lastSub, gone, r.opts.subs)
		lastPub, lastSub = pub, sub
	}
}

// stopProgress ends the progress loop. It may run more than once.
func (r *benchRun) stopProgress() { r.drainOne.Do(func() { close(r.draining) }) }

// abort unblocks every read and write of the run, at once; close cleans up.
func (r *benchRun) abort() {
	r.closing.Store(true)
	now := time.Now()
	for _, s := range r.subs {
		_ = s.conn.SetDeadline(now)
	}
	for _, p := range r.pubs {
		_ = p.conn.SetDeadline(now)
	}
}

// close closes every connection and waits for every goroutine of the run. It
// may run more than once.
func (r *benchRun) close() {
	r.abort()
	r.stopProgress()
	for _, s := range r.subs {
		_ = s.conn.Close()
	}
	for _, p := range r.pubs {
		_ = p.conn.Close()
	}
	r.wg.Wait()
}
