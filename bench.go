package main

import (
	"fmt"
	"time"

	"echohub/internal/loadgen"

	"github.com/urfave/cli/v2"
)

// benchCommand returns the `echohub bench` command. The load generator itself
// is internal/loadgen; this file only maps flags to loadgen.Options.
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
window, and p99 latency within --slo.

--addr takes HOST:PORT for a line-based TCP hub (echohub, ncat --broker), a
URL for another kind of server: redis://HOST:PORT (Redis pub/sub),
nats://HOST:PORT (NATS core pub/sub), ws://HOST:PORT/PATH (a WebSocket hub;
--ws turns HOST:PORT into ws://HOST:PORT/ws), and a comma-separated list for
several nodes of one hub. Subscribers and publishers are spread over the
nodes round-robin, and bench reports how many subscribers saw the messages
they all received in another order than the first subscriber.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:7000", Usage: "`ADDR` of the hub: HOST:PORT, redis://HOST:PORT, nats://HOST:PORT or ws://HOST:PORT/PATH; comma-separated for several nodes"},
			&cli.BoolFlag{Name: "ws", Usage: "drive a WebSocket hub at ws://HOST:PORT/ws, one message per WebSocket message"},
			&cli.StringFlag{Name: "framing", Value: loadgen.Line, Usage: "message `FRAMING`: line or len32"},
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
		Action: func(cCtx *cli.Context) error {
			opts, err := benchOptionsFromCLI(cCtx)
			if err != nil {
				return err
			}
			if stderr := cCtx.App.ErrWriter; isTerminal(stderr) {
				opts.Progress = stderr
			}
			if cCtx.Bool("find-max") {
				_, err = loadgen.FindMax(cCtx.Context, opts, cCtx.App.Writer)
			} else {
				_, err = loadgen.Run(cCtx.Context, opts, cCtx.App.Writer)
			}
			return err
		},
	}
}

// benchOptionsFromCLI reads and checks the flags of `echohub bench`. Its
// errors name the flag, as serve's do.
func benchOptionsFromCLI(cCtx *cli.Context) (loadgen.Options, error) {
	if cCtx.NArg() > 0 {
		return loadgen.Options{}, fmt.Errorf("bench: unexpected argument %q", cCtx.Args().First())
	}
	opts := loadgen.Options{
		Addr:     cCtx.String("addr"),
		WS:       cCtx.Bool("ws"),
		Framing:  cCtx.String("framing"),
		Subs:     cCtx.Int("subs"),
		Pubs:     cCtx.Int("pubs"),
		Size:     cCtx.Int("size"),
		Rate:     cCtx.Float64("rate"),
		Duration: cCtx.Duration("duration"),
		Warmup:   cCtx.Duration("warmup"),
		JSON:     cCtx.Bool("json"),
		SLO:      cCtx.Duration("slo"),
	}
	if err := opts.Validate(); err != nil {
		return loadgen.Options{}, err
	}
	if cCtx.Bool("find-max") && opts.SLO <= 0 {
		return loadgen.Options{}, fmt.Errorf("--slo: %v is out of range (want more than 0)", opts.SLO)
	}
	if !cCtx.Bool("tls") {
		for _, name := range []string{"tls-ca", "tls-cert", "tls-key", "tls-insecure"} {
			if cCtx.IsSet(name) {
				return loadgen.Options{}, fmt.Errorf("--%s: needs --tls", name)
			}
		}
		return opts, nil
	}
	// No address for the server name: each dial takes it from its node's
	// address, as there may be several.
	var err error
	opts.TLSConfig, err = clientTLSConfig("", cCtx.Path("tls-ca"), cCtx.Path("tls-cert"), cCtx.Path("tls-key"), cCtx.Bool("tls-insecure"))
	return opts, err
}
