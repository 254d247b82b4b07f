// Package loadgen is the load generator behind `echohub bench`: it connects
// subscribers and publishers to a running broadcast hub, publishes sequenced,
// timestamped messages at a fixed rate or as fast as the hub accepts them, and
// reports what the subscribers received: throughput, latency percentiles, and
// lost, duplicate and reordered messages.
//
// The API is small: fill in Options, then call Run for one measurement or
// FindMax for the highest rate sustained within a latency bound. Both print
// their report to the writer they are given and return the figures. No
// connection or goroutine outlives either call.
//
// It drives four kinds of server, named by Options.Addr: a broadcast hub
// that speaks line or len32 framing over TCP (echohub, ncat --broker), the
// same over WebSocket, Redis pub/sub and NATS core pub/sub, each with the
// same accounting, so that their figures compare. Several comma-separated
// addresses are several nodes of one hub: the connections are spread over
// them, and the run also checks that every subscriber saw one order.
//
// The package is spread over:
//   - loadgen.go: Options and Run;
//   - msg.go: the message format and framing;
//   - target.go: the kinds of server, --addr, and TCP connections;
//   - redis.go, nats.go, ws.go: Redis, NATS and WebSocket connections;
//   - run.go: one timed run: dialling, the barrier, the schedule, the drain;
//   - sub.go: a subscriber and its sequence accounting;
//   - pub.go: a publisher and its pacing;
//   - order.go: the order check across nodes;
//   - report.go: Result, the table and the JSON;
//   - max.go: the FindMax search.
package loadgen

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"time"
)

// Options is what one run or search asks for. Its fields match the flags of
// `echohub bench`, and Validate's errors name those flags.
type Options struct {
	Addr      string        // HOST:PORT, or a URL naming the kind of server; several, comma-separated, for several nodes (see target.go)
	WS        bool          // HOST:PORT addresses are WebSocket hubs at ws://HOST:PORT/ws
	Framing   string        // Line or Len32
	Subs      int           // subscriber connections
	Pubs      int           // publisher connections
	Size      int           // bytes per message, see msg.go
	Rate      float64       // total msgs/s over all publishers; 0 = as fast as the server accepts
	Duration  time.Duration // measurement window (of each probe, for FindMax)
	Warmup    time.Duration // publishing before the window, not measured
	JSON      bool          // print one JSON object instead of the table
	SLO       time.Duration // p99 latency bound of FindMax
	MaxProbes int           // probes of a FindMax search; 0 = 12
	TLSConfig *tls.Config   // nil for plain TCP
	Progress  io.Writer     // where a progress line goes once a second; nil for none
}

// Validate checks everything but TLS. Its errors name the flag of `echohub
// bench`, in the form serve uses: "--subs: 0 is out of range (want at least 1)".
func (o Options) Validate() error {
	if _, _, err := parseAddr(o.Addr, o.WS); err != nil {
		return err
	}
	switch {
	case o.Framing != Line && o.Framing != Len32:
		return fmt.Errorf("--framing: unknown value %q (want %s, %s)", o.Framing, Line, Len32)
	case o.Subs < 1:
		return fmt.Errorf("--subs: %d is out of range (want at least 1)", o.Subs)
	case o.Pubs < 1 || o.Pubs > maxPubs:
		return fmt.Errorf("--pubs: %d is out of range (1 to %d)", o.Pubs, maxPubs)
	case o.Size < minSize(o.Framing):
		return fmt.Errorf("--size: %d is out of range (want at least %d with %s framing, to hold the message header)",
			o.Size, minSize(o.Framing), o.Framing)
	case o.Size > maxSize:
		return fmt.Errorf("--size: %d is out of range (want at most %d)", o.Size, maxSize)
	case !(o.Rate >= 0 && o.Rate <= maxRate): // NaN fails both
		return fmt.Errorf("--rate: %g is out of range (want 0 for as fast as the hub accepts, or up to 1e9 msgs/s)", o.Rate)
	case o.Duration <= 0:
		return fmt.Errorf("--duration: %v is out of range (want more than 0)", o.Duration)
	case o.Warmup < 0:
		return fmt.Errorf("--warmup: %v is out of range (want 0 or more)", o.Warmup)
	case o.SLO < 0:
		return fmt.Errorf("--slo: %v is out of range (want more than 0)", o.SLO)
	case o.MaxProbes < 0:
		return fmt.Errorf("max probes: %d is out of range (want 0 for the default, or more)", o.MaxProbes)
	}
	return nil
}

// Bounds that Validate enforces.
const (
	maxPubs = 1 << 16 // a message header holds the publisher index in 4 hex digits
	maxRate = 1e9     // msgs/s; Validate's error says so
)

// Run performs one run of opts and prints its figures to stdout, as a table
// or, with opts.JSON, as one JSON object. No connection or goroutine outlives
// it.
func Run(ctx context.Context, opts Options, stdout io.Writer) (Result, error) {
	if err := opts.Validate(); err != nil {
		return Result{}, err
	}
	res, err := measure(ctx, opts)
	if err != nil {
		return res, err
	}
	if opts.JSON {
		return res, writeJSON(stdout, res)
	}
	return res, res.writeTable(stdout)
}
