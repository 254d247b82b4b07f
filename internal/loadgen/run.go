package loadgen

import (
	"context"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sync/errgroup"
)

// Bounds of one run. Every wait in a run is bounded by one of these, by the
// schedule, or by ctx.
const (
	dialTimeout     = 5 * time.Second        // per connection, TLS handshake included
	dialConcurrency = 8                      // connections dialled at once
	readyTimeout    = 10 * time.Second       // for every subscriber to see a probe
	probeEvery      = 50 * time.Millisecond  // probe resend interval while waiting
	startDelay      = 10 * time.Millisecond  // from the barrier to the first message
	flushGrace      = 2 * time.Second        // a publisher's last flush may take this long after the end
	drainIdle       = 2 * time.Second        // the drain stops after this long without a delivery
	drainMax        = 10 * time.Second       // and after this long in any case
	drainPoll       = 10 * time.Millisecond  // how often the drain looks at the counters
	flushEvery      = 256                    // unthrottled publishers flush after this many messages
	readBuffer      = 32 << 10               // a subscriber's read buffer, at least two messages
	writeBuffer     = 64 << 10               // a publisher's bufio.Writer, at least one message
	maxLatency      = int64(time.Hour / 1e3) // in µs; larger latencies are recorded as this
	orderBudget     = 1 << 24                // deliveries recorded in all for the order check of several nodes (8 bytes each)
)

// A run is one timed run: its connections and the measurement window
// they share. Run makes one per run, and a --find-max search one per
// probe.
type run struct {
	// Immutable after measure sets target.
	opts     Options
	target   target
	wire     int // bytes per message on the connection
	probeLen int // payload bytes of a probe, '\n' included in line framing

	// Set by dialAll, then immutable.
	subs []*subscriber
	pubs []*publisher

	// Set before the first message is sent. They are MaxInt64 until then, so
	// that a readLoop counts nothing in the window early.
	winStart atomic.Int64 // on nanotime's clock: warmup ends, measurement starts
	winEnd   atomic.Int64 // measurement and publishing end

	closing  atomic.Bool   // set before bench closes the connections: a read error after it is no disconnect
	unready  atomic.Int64  // subscribers that have not seen a probe
	ready    chan struct{} // closed by the readLoop that brings unready to 0
	draining chan struct{} // closed by stopProgress when publishing is over
	drainOne sync.Once     // closes draining

	wg sync.WaitGroup // every goroutine the run starts; close waits for it
}

// newRun prepares a run of opts, which must be valid.
func newRun(opts Options) *run {
	r := &run{
		opts:     opts,
		wire:     wireSize(opts.Framing, opts.Size),
		probeLen: probePayloadLen,
		ready:    make(chan struct{}),
		draining: make(chan struct{}),
	}
	if opts.Framing == Line {
		r.probeLen++
	}
	r.winStart.Store(math.MaxInt64)
	r.winEnd.Store(math.MaxInt64)
	r.unready.Store(int64(opts.Subs))
	return r
}

// measure performs one run and returns its figures. It prints nothing
// but the progress lines. Every connection is closed and every goroutine has
// returned when it returns.
func measure(ctx context.Context, opts Options) (Result, error) {
	t, err := newTarget(opts)
	if err != nil {
		return Result{}, err
	}
	defer t.close()
	r := newRun(opts)
	r.target = t
	defer r.close()
	if err := r.dialAll(ctx); err != nil {
		return Result{}, err
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
		// A hub echoes to the sender: the publisher reads it, so that it is
		// never a slow client. readLoop returns when close closes the
		// connection.
		r.wg.Go(p.conn.readLoop)
	}
	if err := r.barrier(ctx); err != nil {
		return Result{}, err
	}

	// Schedule: warmup [t0, ws), measurement [ws, we); publishing stops at we.
	t0 := nanotime() + int64(startDelay)
	ws := t0 + int64(opts.Warmup)
	we := ws + int64(opts.Duration)
	r.winStart.Store(ws)
	r.winEnd.Store(we)
	if opts.Progress != nil {
		r.wg.Go(func() { r.progressLoop(opts.Progress) })
	}
	var pacers []pacer
	if opts.Rate > 0 {
		pacers = newPacers(opts.Rate, opts.Pubs, t0)
	}
	var pubs sync.WaitGroup
	for i, p := range r.pubs {
		var pacer *pacer
		if pacers != nil {
			pacer = &pacers[i]
		}
		pubs.Go(func() { p.publish(ctx, pacer, t0, ws, we) })
	}
	pubs.Wait()
	r.stopProgress()
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("bench: %w", err)
	}
	var published int64
	for _, p := range r.pubs {
		published += int64(p.sent)
	}
	r.drain(ctx, published)
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("bench: %w", err)
	}
	r.close()
	return r.result(), nil
}

// dialAll connects every subscriber, then every publisher, round-robin over
// the target's nodes. On error it leaves what it opened for close.
func (r *run) dialAll(ctx context.Context) error {
	subs := make([]subConn, r.opts.Subs)
	pubs := make([]pubConn, r.opts.Pubs)
	nodes := len(r.target.nodes())
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(dialConcurrency)
	for i := range subs {
		g.Go(func() (err error) {
			subs[i], err = r.target.dialSub(gctx, i%nodes)
			return err
		})
	}
	for i := range pubs {
		g.Go(func() (err error) {
			pubs[i], err = r.target.dialPub(gctx, i%nodes)
			return err
		})
	}
	err := g.Wait()
	for i, c := range subs {
		if c == nil {
			continue
		}
		s := &subscriber{
			run:  r,
			node: i % nodes,
			conn: c,
			done: make(chan struct{}),
			seqs: make([]sequence, r.opts.Pubs),
			// 3 significant digits: 0.1% resolution. Packed (sparse) since
			// a dense histogram of this range is ~190 KB per subscriber.
			hist: hdrhistogram.NewPacked(1, maxLatency, 3),
		}
		if nodes > 1 {
			s.orderMax = orderBudget / r.opts.Subs
		}
		r.subs = append(r.subs, s)
	}
	for i, c := range pubs {
		if c != nil {
			r.pubs = append(r.pubs, &publisher{id: len(r.pubs), node: i % nodes, run: r, conn: c})
		}
	}
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("bench: %w", ctx.Err())
	}
	return err
}

// barrier makes the first publisher on each node send probes until every
// subscriber has seen one: then the server has registered them all, and
// every message sent after barrier returns reaches every subscriber. (On
// nodes that share one stream one node's probes would do; on nodes that do
// not, each node's subscribers need their own.)
func (r *run) barrier(ctx context.Context) error {
	timeout := time.NewTimer(readyTimeout)
	defer timeout.Stop()
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	probers := r.pubs[:min(len(r.pubs), len(r.target.nodes()))]
	for _, p := range probers {
		// A probe write blocked past readyTimeout fails, and the run with it.
		t := time.AfterFunc(readyTimeout, p.conn.abort)
		defer t.Stop()
	}
	for nonce := uint64(0); ; nonce++ {
		frame := probeFrame(r.opts.Framing, nonce)
		for _, p := range probers {
			if err := p.conn.probe(frame, payloadOf(r.opts.Framing, frame)); err != nil {
				return fmt.Errorf("bench: probe: %w", err)
			}
		}
		select {
		case <-r.ready:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("bench: %w", ctx.Err())
		case <-timeout.C:
			return fmt.Errorf("bench: %d of %d subscribers saw no probe within %v",
				r.unready.Load(), r.opts.Subs, readyTimeout)
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
// messages, deliveries stall for drainIdle, drainMax passes, or ctx
// is done.
func (r *run) drain(ctx context.Context, published int64) {
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	start := time.Now()
	lastSum, lastChange := int64(-1), start
	for time.Since(start) < drainMax && time.Since(lastChange) < drainIdle {
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
func (r *run) progressLoop(w io.Writer) {
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
			secs, pub-lastPub, sub-lastSub, gone, r.opts.Subs)
		lastPub, lastSub = pub, sub
	}
}

// stopProgress ends the progress loop. It may run more than once.
func (r *run) stopProgress() { r.drainOne.Do(func() { close(r.draining) }) }

// abort unblocks every read and write of the run, at once; close cleans up.
func (r *run) abort() {
	r.closing.Store(true)
	for _, s := range r.subs {
		_ = s.conn.close()
	}
	for _, p := range r.pubs {
		p.conn.abort()
	}
}

// close closes every connection and waits for every goroutine of the run. It
// may run more than once.
func (r *run) close() {
	r.abort()
	r.stopProgress()
	for _, p := range r.pubs {
		_ = p.conn.close()
	}
	r.wg.Wait()
}
