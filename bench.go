package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/urfave/cli/v2"
)

// The bench command is spread over seven files:
//   - bench.go: the command, its flags and runBench;
//   - benchmsg.go: the message format and framing;
//   - benchrun.go: one timed run: dialling, the barrier, the schedule, the drain;
//   - benchsub.go: a subscriber connection and its sequence accounting;
//   - benchpub.go: a publisher connection and its pacing;
//   - benchreport.go: the figures, the table and the JSON;
//   - benchmax.go: the --find-max search.

// benchOptions is what one `echohub bench` invocation asks for.
type benchOptions struct {
	addr      string        // server address, host:port
	framing   string        // benchLine or benchLen32
	subs      int           // subscriber connections
	pubs      int           // publisher connections
	size      int           // bytes per message, see benchmsg.go
	rate      float64       // total msgs/s over all publishers; 0 = as fast as the server accepts
	duration  time.Duration // measurement window
	warmup    time.Duration // publishing before the window, not measured
	json      bool          // one JSON object on stdout instead of the table
	findMax   bool          // search the highest sustained rate
	slo       time.Duration // p99 latency bound of --find-max
	maxProbes int           // probes of a --find-max search; 0 = benchMaxProbes
	tlsConfig *tls.Config   // nil for plain TCP
	progress  io.Writer     // where the once-a-second progress line goes; nil for none
}

// benchCommand returns the `echohub bench` command.
func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure a running hub: publish rate, fan-out throughput, latency, loss",
		Description: `bench connects --subs subscribers and --pubs publishers to the hub at --addr,
publishes --size byte messages for --warmup plus --duration, and reports what
the subscribers received over the --duration window: the publish rate,
deliveries per second and MB/s summed over subscribers, end-to-end latency
percentiles, and lost, duplicate and reordered messages.

With --rate, publishers follow a schedule and latency is measured from each
message's scheduled send time, so a server that pushes back shows up as
latency. With --find-max, bench runs probes at growing, then bisected, rates
and reports the highest rate sustained: no loss, no disconnect, at least 98%
of the offered rate published and of the expected deliveries made in the
window, and p99 latency within --slo.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:7000", Usage: "`HOST:PORT` of the hub"},
			&cli.StringFlag{Name: "framing", Value: benchLine, Usage: "message `FRAMING`: line or len32"},
			&cli.IntFlag{Name: "subs", Value: 10, Usage: "`N` subscriber connections"},
			&cli.IntFlag{Name: "pubs", Value: 1, Usage: "`N` publisher connections"},
			&cli.IntFlag{Name: "size", Value: 64, Usage: "message size in `BYTES`: with line framing including the '\\n', with len32 not counting the 4-byte length"},
			&cli.Float64Flag{Name: "rate", Value: 0, Usage: "total `MSGS_PER_S` over all publishers; 0 = as fast as the hub accepts"},
			&cli.DurationFlag{Name: "duration", Value: 5 * time.Second, Usage: "measurement window `DUR` (of each probe with --find-max)"},
			&cli.DurationFlag{Name: "warmup", Value: time.Second, Usage: "`DUR` of publishing before the window, not measured"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object instead of the table"},
			&cli.BoolFlag{Name: "find-max", Usage: "search the highest rate sustained within --slo (starts at --rate, or 1000)"},
			&cli.DurationFlag{Name: "slo", Value: 50 * time.Millisecond, Usage: "p99 latency bound `DUR` for --find-max"},
			&cli.BoolFlag{Name: "tls", Usage: "connect with TLS (1.2 or later)"},
			&cli.PathFlag{Name: "tls-ca", Usage: "PEM `FILE` of CAs to verify the hub with (default: system roots)"},
			&cli.PathFlag{Name: "tls-cert", Usage: "PEM client certificate `FILE`, with --tls-key"},
			&cli.PathFlag{Name: "tls-key", Usage: "PEM client key `FILE`, with --tls-cert"},
			&cli.BoolFlag{Name: "tls-insecure", Usage: "do not verify the hub's certificate"},
		},
		Action: func(c *cli.Context) error {
			opts, err := benchOptionsFromCLI(c)
			if err != nil {
				return err
			}
			if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
				opts.progress = os.Stderr
			}
			if opts.findMax {
				_, err = benchFindMax(c.Context, opts, c.App.Writer)
			} else {
				_, err = runBench(c.Context, opts, c.App.Writer)
			}
			return err
		},
	}
}

// benchOptionsFromCLI reads and checks the flags of c.
func benchOptionsFromCLI(c *cli.Context) (benchOptions, error) {
	if c.NArg() > 0 {
		return benchOptions{}, fmt.Errorf("bench takes no arguments, got %q", c.Args().First())
	}
	opts := benchOptions{
		addr:     c.String("addr"),
		framing:  c.String("framing"),
		subs:     c.Int("subs"),
		pubs:     c.Int("pubs"),
		size:     c.Int("size"),
		rate:     c.Float64("rate"),
		duration: c.Duration("duration"),
		warmup:   c.Duration("warmup"),
		json:     c.Bool("json"),
		findMax:  c.Bool("find-max"),
		slo:      c.Duration("slo"),
	}
	if err := opts.validate(); err != nil {
		return benchOptions{}, err
	}
	if !c.Bool("tls") {
		for _, name := range []string{"tls-ca", "tls-cert", "tls-key", "tls-insecure"} {
			if c.IsSet(name) {
				return benchOptions{}, fmt.Errorf("--%s needs --tls", name)
			}
		}
		return opts, nil
	}
	var err error
	opts.tlsConfig, err = clientTLSConfig(opts.addr, c.Path("tls-ca"), c.Path("tls-cert"), c.Path("tls-key"), c.Bool("tls-insecure"))
	return opts, err
}

// validate checks everything but TLS; its errors name the flag.
func (o benchOptions) validate() error {
	if _, _, err := net.SplitHostPort(o.addr); err != nil {
		return fmt.Errorf("--addr: %w", err)
	}
	switch {
	case o.framing != benchLine && o.framing != benchLen32:
		return fmt.Errorf("--framing must be line or len32, got %q", o.framing)
	case o.subs < 1:
		return fmt.Errorf("--subs must be at least 1, got %d", o.subs)
	case o.pubs < 1 || o.pubs > 1<<16:
		return fmt.Errorf("--pubs must be in [1, 65536], got %d", o.pubs)
	case o.size < benchMinSize(o.framing):
		return fmt.Errorf("--size must be at least %d with %s framing, to hold the message header, got %d",
			benchMinSize(o.framing), o.framing, o.size)
	case o.size > benchMaxSize:
		return fmt.Errorf("--size must be at most %d, got %d", benchMaxSize, o.size)
	case o.rate < 0 || o.rate > 1e9:
		return fmt.Errorf("--rate must be in [0, 1e9] msgs/s, got %g", o.rate)
	case o.duration <= 0:
		return fmt.Errorf("--duration must be positive, got %v", o.duration)
	case o.warmup < 0:
		return fmt.Errorf("--warmup must not be negative, got %v", o.warmup)
	case o.findMax && o.slo <= 0:
		return fmt.Errorf("--slo must be positive, got %v", o.slo)
	}
	return nil
}

// runBench performs one run of opts and prints its figures to stdout, as a
// table or, with opts.json, as one JSON object. No connection or goroutine
// outlives it.
func runBench(ctx context.Context, opts benchOptions, stdout io.Writer) (benchResult, error) {
	if err := opts.validate(); err != nil {
		return benchResult{}, err
	}
	res, err := benchMeasure(ctx, opts)
	if err != nil {
		return res, err
	}
	if opts.json {
		return res, benchWriteJSON(stdout, res)
	}
	return res, res.writeTable(stdout)
}
