package main

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"
)

// slowPolicy is what the hub does with a client that falls behind (--slow).
type slowPolicy int

const (
	slowDisconnect slowPolicy = iota // close the client
	slowDrop                         // skip the message for that client alone
)

var slowNames = []string{slowDisconnect: "disconnect", slowDrop: "drop"}

func (p slowPolicy) String() string { return slowNames[p] }

const (
	// maxSize is the largest value of a size flag, and the largest frame
	// on the wire (a len32 payload with its 4-byte header): 1 GiB. It keeps
	// every sum of sizes the server makes within a 32-bit int, so that a
	// configuration valid on amd64 is valid, and safe, on 386 and arm: the
	// read buffer doubles up to one frame (2*(1GiB-1)), and a writer's
	// batch is up to 256 KiB plus one frame. 2 GiB overflowed: a 386 build
	// panicked on the first client with --framing len32 --max-message
	// 2147483647.
	maxSize = 1 << 30
	// maxCount is the largest value of a count flag (--queue,
	// --max-clients, ...): int's range on 32-bit platforms, so that no
	// value means one thing on amd64 and another on 386.
	maxCount = math.MaxInt32
)

// maxMessageFor returns the largest --max-message for framing f: one frame,
// its header included, is at most maxSize.
func maxMessageFor(f framing) int {
	if f == framingLen32 {
		return maxSize - len32Header
	}
	return maxSize
}

// config is everything `echohub serve` is told by its flags. The zero value is
// not useful; start from defaultConfig.
type config struct {
	listen          string
	framing         framing
	maxMessage      int // largest line (counting its '\n') or len32 payload; raw: the read size
	excludeSender   bool
	queue           int // per-client queue bound, in messages
	maxPending      int // per-client queue bound, in bytes
	slow            slowPolicy
	stallLimit      time.Duration // how long a client with a full queue and a stuck write may hold the hub before --slow applies
	stallPause      time.Duration // how long it may hold the hub before the hub goes on without it (spill.go)
	spillBuffer     int           // bound of the spill, in bytes (spill.go); 0 = off
	writeTimeout    time.Duration
	coalesce        time.Duration // after a fan-out, the hub gathers messages this long before the next; 0 = off
	maxClients      int           // 0 = unlimited
	logLevel        zerolog.Level
	logFormat       string // auto, json or console
	shutdownTimeout time.Duration
	metricsListen   string    // HTTP address for /metrics and friends; empty = off
	pprof           bool      // serve net/http/pprof on metricsListen
	clientsShowAddr bool      // /clients lists remote addresses
	api             apiLimits // no flags: timeouts and connection cap of the HTTP API (httpapi.go)

	// The web listener, in web.go.
	webListen  string   // HTTP address for the page and WebSocket clients; empty = off
	webOrigins []string // --web-origin: host patterns of other origins whose pages may connect

	tlsCert, tlsKey  string        // PEM files; TLS is served when set (both or neither)
	tlsClientCA      string        // PEM file: with it, clients need a certificate signed by one of its CAs
	handshakeTimeout time.Duration // bound on a TLS handshake
	tls              *certStore    // read from the files by configFromCLI, nil without TLS; copies share it

	// Limits, applied in limits.go.
	allow, deny     []netip.Prefix // admit from allow (empty = everyone) unless in deny
	maxClientsPerIP int            // 0 = unlimited
	rate            float64        // messages per second per client, 0 = unlimited
	burst           int            // with rate: messages a client may send at once, 0 = one second's worth
	keepalive       time.Duration  // TCP keepalive idle time and probe interval, 0 = off

	// Backplane (backplane.go): off while backplane is empty.
	backplane  []string      // NATS server URLs
	bpStream   string        // JetStream stream, and its subject
	bpStorage  string        // memory or file, for a stream this node creates
	bpReplicas int           // replicas of a stream this node creates
	bpMaxAge   time.Duration // retention of a stream this node creates, 0 = unlimited
	bpMaxBytes int           // and its size bound, 0 = unlimited
	bpBuffer   int           // stream messages the consumer buffers ahead of the hub
	bpWindow   int           // reads gathered while a publish awaits its acknowledgement, before readers wait

	// sendBuffer has no flag: when positive, it sets SO_SNDBUF on accepted
	// connections, so that in tests a frozen reader fills its queue after
	// kilobytes rather than after the kernel's megabytes.
	sendBuffer int
}

// defaultConfig returns the documented defaults (README flags table).
func defaultConfig() config {
	return config{
		listen:          "127.0.0.1:7000",
		framing:         framingLine,
		maxMessage:      64 << 10,
		queue:           1024,
		maxPending:      4 << 20,
		slow:            slowDisconnect,
		writeTimeout:    10 * time.Second,
		coalesce:        defaultCoalesce,
		maxClients:      10000,
		keepalive:       30 * time.Second,
		logLevel:        zerolog.InfoLevel,
		logFormat:       "auto",
		shutdownTimeout: 5 * time.Second,

		handshakeTimeout: 5 * time.Second,
		stallLimit:       defaultStallLimit,
		stallPause:       defaultStallPause,
		spillBuffer:      defaultSpillBuffer,
		api:              defaultAPILimits(),

		bpStream:   "ECHOHUB",
		bpStorage:  "memory",
		bpReplicas: 1,
		bpMaxAge:   time.Hour,
		bpMaxBytes: 64 << 20,
		bpBuffer:   256,
		bpWindow:   256,
	}
}

// serveFlags are the flags of `echohub serve`. Each is also read from the
// environment as ECHOHUB_<FLAG>.
func serveFlags() []cli.Flag {
	d := defaultConfig()
	env := func(name string) []string {
		return []string{"ECHOHUB_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))}
	}
	str := func(name, value, usage string) cli.Flag {
		return &cli.StringFlag{Name: name, Value: value, Usage: usage, EnvVars: env(name)}
	}
	dur := func(name string, value time.Duration, usage string) cli.Flag {
		return &cli.DurationFlag{Name: name, Value: value, Usage: usage, EnvVars: env(name)}
	}
	return []cli.Flag{
		str("listen", d.listen, "TCP `ADDR` to listen on"),
		str("framing", d.framing.String(), "message framing `MODE`: line, raw or len32"),
		str("max-message", formatSize(d.maxMessage), "largest message, or raw read, in `BYTES`"),
		&cli.BoolFlag{Name: "exclude-sender", Usage: "do not deliver a message back to its own sender", EnvVars: env("exclude-sender")},
		&cli.IntFlag{Name: "queue", Value: d.queue, Usage: "most messages (`N`) queued for one client", EnvVars: env("queue")},
		str("max-pending", formatSize(d.maxPending), "most `BYTES` queued for one client"),
		str("slow", d.slow.String(), "`POLICY` for a client that falls behind: disconnect or drop"),
		dur("stall-pause", d.stallPause, "go on without a stuck client after `DUR`, keeping what it misses"),
		str("spill-buffer", formatSize(d.spillBuffer), "keep at most `BYTES` for clients left behind, 0 = off"),
		dur("stall-limit", d.stallLimit, "let a stuck client hold the stream `DUR` before --slow applies"),
		dur("write-timeout", d.writeTimeout, "close a client whose write blocks longer than `DUR`"),
		dur("coalesce", d.coalesce, "longest the hub holds messages for busy writers (`DUR`), 0 = never"),
		&cli.IntFlag{Name: "max-clients", Value: d.maxClients, Usage: "most clients at once (`N`), 0 = unlimited", EnvVars: env("max-clients")},
		&cli.StringSliceFlag{Name: "allow", Usage: "admit clients only from this `CIDR` or address (repeatable)", EnvVars: env("allow")},
		&cli.StringSliceFlag{Name: "deny", Usage: "refuse clients from this `CIDR` or address, even if allowed (repeatable)", EnvVars: env("deny")},
		&cli.IntFlag{Name: "max-clients-per-ip", Usage: "most clients at once from one IP address (`N`), 0 = unlimited", EnvVars: env("max-clients-per-ip")},
		&cli.Float64Flag{Name: "rate", Usage: "messages per second (`MSGS_PER_S`) each client may send, 0 = unlimited", EnvVars: env("rate")},
		&cli.IntFlag{Name: "burst", Usage: "messages (`N`) a client may send at once under --rate, 0 = one second's worth", EnvVars: env("burst")},
		dur("keepalive", d.keepalive, "probe a TCP connection idle for `DUR`, 0 = off"),
		str("log-level", d.logLevel.String(), "log `LEVEL`: debug, info, warn or error"),
		str("log-format", d.logFormat, "log `FORMAT`: auto, json or console"),
		dur("shutdown-timeout", d.shutdownTimeout, "on SIGINT/SIGTERM, flush queues for up to `DUR`"),
		str("tls-cert", "", "serve TLS with the certificate chain in PEM `FILE`"),
		str("tls-key", "", "the private key of --tls-cert, in PEM `FILE`"),
		str("tls-client-ca", "", "require client certificates signed by a CA in PEM `FILE`"),
		dur("handshake-timeout", d.handshakeTimeout, "close a connection whose TLS handshake takes longer than `DUR`"),
		str("metrics-listen", d.metricsListen, "HTTP `ADDR` for /metrics, /healthz, /readyz and /clients, empty = off"),
		&cli.BoolFlag{Name: "pprof", Usage: "also serve /debug/pprof/ on --metrics-listen", EnvVars: env("pprof")},
		&cli.BoolFlag{Name: "clients-show-addr", Usage: "list clients' remote addresses in /clients", EnvVars: env("clients-show-addr")},
		str("backplane", "", "NATS `URLS` (comma-separated) of the stream all nodes share, empty = off"),
		str("backplane-stream", d.bpStream, "JetStream stream and subject `NAME`"),
		str("backplane-storage", d.bpStorage, "storage `KIND` of a stream this node creates: memory or file"),
		&cli.IntFlag{Name: "backplane-replicas", Value: d.bpReplicas, Usage: "replicas (`N`) of a stream this node creates, 1 to 5", EnvVars: env("backplane-replicas")},
		dur("backplane-max-age", d.bpMaxAge, "a stream this node creates keeps messages for `DUR`, 0 = no limit"),
		str("backplane-max-bytes", formatSize(d.bpMaxBytes), "a stream this node creates keeps at most `BYTES`, oldest dropped, 0 = no limit"),
		&cli.IntFlag{Name: "backplane-buffer", Value: d.bpBuffer, Usage: "stream messages (`N`) fetched ahead of this node's clients", EnvVars: env("backplane-buffer")},
		&cli.IntFlag{Name: "backplane-window", Value: d.bpWindow, Usage: "reads (`N`) held while a publish awaits its ack, before readers wait", EnvVars: env("backplane-window")},
		str("web-listen", d.webListen, "HTTP `ADDR` for the live page and WebSocket clients, empty = off"),
		&cli.StringSliceFlag{Name: "web-origin", Usage: "also let pages from origin `HOST` (a pattern) open WebSockets (repeatable)", EnvVars: env("web-origin")},
	}
}

// configFromCLI reads and validates the flags of `echohub serve`, and reads
// the TLS files they name. Its errors name the flag (and the file).
func configFromCLI(cCtx *cli.Context) (config, error) {
	cfg := defaultConfig()
	var errs []error
	flagErr := func(name string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", name, err))
		}
	}
	var err error
	cfg.listen = cCtx.String("listen")
	cfg.framing, err = parseFraming(cCtx.String("framing"))
	flagErr("framing", err)
	cfg.maxMessage, err = parseSize(cCtx.String("max-message"))
	flagErr("max-message", err)
	cfg.excludeSender = cCtx.Bool("exclude-sender")
	cfg.queue = cCtx.Int("queue")
	cfg.maxPending, err = parseSize(cCtx.String("max-pending"))
	flagErr("max-pending", err)
	cfg.slow, err = parseSlow(cCtx.String("slow"))
	flagErr("slow", err)
	cfg.stallLimit = cCtx.Duration("stall-limit")
	cfg.stallPause = cCtx.Duration("stall-pause")
	if !cCtx.IsSet("stall-pause") {
		cfg.stallPause = min(cfg.stallPause, cfg.stallLimit) // a lower --stall-limit takes the default pause down with it
	}
	cfg.spillBuffer, err = parseSize(cCtx.String("spill-buffer"))
	flagErr("spill-buffer", err)
	cfg.writeTimeout = cCtx.Duration("write-timeout")
	cfg.coalesce = cCtx.Duration("coalesce")
	cfg.maxClients = cCtx.Int("max-clients")
	cfg.allow, err = parsePrefixes(cCtx.StringSlice("allow"))
	flagErr("allow", err)
	cfg.deny, err = parsePrefixes(cCtx.StringSlice("deny"))
	flagErr("deny", err)
	cfg.maxClientsPerIP = cCtx.Int("max-clients-per-ip")
	cfg.rate, cfg.burst = cCtx.Float64("rate"), cCtx.Int("burst")
	cfg.keepalive = cCtx.Duration("keepalive")
	cfg.logLevel, err = parseLevel(cCtx.String("log-level"))
	flagErr("log-level", err)
	cfg.logFormat = cCtx.String("log-format")
	cfg.shutdownTimeout = cCtx.Duration("shutdown-timeout")
	cfg.tlsCert, cfg.tlsKey = cCtx.String("tls-cert"), cCtx.String("tls-key")
	cfg.tlsClientCA = cCtx.String("tls-client-ca")
	cfg.handshakeTimeout = cCtx.Duration("handshake-timeout")
	cfg.metricsListen = cCtx.String("metrics-listen")
	cfg.pprof = cCtx.Bool("pprof")
	cfg.clientsShowAddr = cCtx.Bool("clients-show-addr")
	cfg.backplane, err = parseBackplaneURLs(cCtx.String("backplane"))
	flagErr("backplane", err)
	cfg.bpStream, cfg.bpStorage = cCtx.String("backplane-stream"), cCtx.String("backplane-storage")
	cfg.bpReplicas = cCtx.Int("backplane-replicas")
	cfg.bpMaxAge = cCtx.Duration("backplane-max-age")
	cfg.bpMaxBytes, err = parseSize(cCtx.String("backplane-max-bytes"))
	flagErr("backplane-max-bytes", err)
	cfg.bpBuffer, cfg.bpWindow = cCtx.Int("backplane-buffer"), cCtx.Int("backplane-window")
	if len(cfg.backplane) == 0 {
		for _, f := range []string{"backplane-stream", "backplane-storage", "backplane-replicas",
			"backplane-max-age", "backplane-max-bytes", "backplane-buffer", "backplane-window"} {
			if cCtx.IsSet(f) {
				flagErr(f, errors.New("needs --backplane"))
			}
		}
	}
	cfg.webListen = cCtx.String("web-listen")
	cfg.webOrigins = cCtx.StringSlice("web-origin")
	if len(errs) > 0 {
		return cfg, errs[0]
	}
	if err := cfg.validate(); err != nil {
		return cfg, err
	}
	cfg.tls, err = loadCertStore(cfg) // bad files stop serve before the listener opens
	return cfg, err
}

// validate checks the values that each parsed on its own but are out of range
// or do not fit together.
func (cfg config) validate() error {
	switch {
	case cfg.listen == "":
		return errors.New("--listen: empty address")
	case cfg.maxMessage < 1 || cfg.maxMessage > maxMessageFor(cfg.framing):
		return fmt.Errorf("--max-message: %d is out of range for --framing %s (1 to %d; a frame is at most 1GiB)",
			cfg.maxMessage, cfg.framing, maxMessageFor(cfg.framing))
	case cfg.queue < 1 || cfg.queue > maxCount:
		return fmt.Errorf("--queue: %d is out of range (1 to %d)", cfg.queue, maxCount)
	case cfg.maxPending > maxSize:
		return fmt.Errorf("--max-pending: %d is out of range (at most %d, 1GiB)", cfg.maxPending, maxSize)
	case cfg.maxPending < cfg.framing.maxFrame(cfg.maxMessage):
		return fmt.Errorf("--max-pending: %d is less than one largest message (%d bytes, from --max-message)",
			cfg.maxPending, cfg.framing.maxFrame(cfg.maxMessage))
	case cfg.stallLimit <= 0:
		return fmt.Errorf("--stall-limit: %v is out of range (want more than 0)", cfg.stallLimit)
	case cfg.stallPause <= 0 || cfg.stallPause > cfg.stallLimit:
		return fmt.Errorf("--stall-pause: %v is out of range (more than 0, up to --stall-limit %v)", cfg.stallPause, cfg.stallLimit)
	case cfg.spillBuffer > maxSize:
		return fmt.Errorf("--spill-buffer: %d is out of range (at most %d, 1GiB)", cfg.spillBuffer, maxSize)
	case cfg.writeTimeout <= 0:
		return fmt.Errorf("--write-timeout: %v is out of range (want more than 0)", cfg.writeTimeout)
	case cfg.coalesce < 0 || cfg.coalesce > maxCoalesce:
		return fmt.Errorf("--coalesce: %v is out of range (0 to %v)", cfg.coalesce, maxCoalesce)
	case cfg.maxClients < 0 || cfg.maxClients > maxCount:
		return fmt.Errorf("--max-clients: %d is out of range (0 for unlimited, or 1 to %d)", cfg.maxClients, maxCount)
	case cfg.maxClientsPerIP < 0 || cfg.maxClientsPerIP > maxCount:
		return fmt.Errorf("--max-clients-per-ip: %d is out of range (0 for unlimited, or 1 to %d)", cfg.maxClientsPerIP, maxCount)
	case cfg.rate < 0 || math.IsNaN(cfg.rate) || math.IsInf(cfg.rate, 0):
		return fmt.Errorf("--rate: %v is out of range (want 0 for unlimited, or more)", cfg.rate)
	case cfg.burst < 0 || cfg.burst > maxCount:
		return fmt.Errorf("--burst: %d is out of range (0 for one second's worth, or 1 to %d)", cfg.burst, maxCount)
	case cfg.keepalive < 0:
		return fmt.Errorf("--keepalive: %v is out of range (want 0 for off, or more)", cfg.keepalive)
	case cfg.logFormat != "auto" && cfg.logFormat != "json" && cfg.logFormat != "console":
		return fmt.Errorf("--log-format: unknown value %q (want auto, json, console)", cfg.logFormat)
	case cfg.shutdownTimeout < 0:
		return fmt.Errorf("--shutdown-timeout: %v is out of range (want 0 or more)", cfg.shutdownTimeout)
	case cfg.tlsCert != "" && cfg.tlsKey == "":
		return fmt.Errorf("--tls-cert %s: no --tls-key given (want both or neither)", cfg.tlsCert)
	case cfg.tlsKey != "" && cfg.tlsCert == "":
		return fmt.Errorf("--tls-key %s: no --tls-cert given (want both or neither)", cfg.tlsKey)
	case cfg.tlsClientCA != "" && cfg.tlsCert == "":
		return fmt.Errorf("--tls-client-ca %s: needs --tls-cert and --tls-key", cfg.tlsClientCA)
	case cfg.handshakeTimeout <= 0:
		return fmt.Errorf("--handshake-timeout: %v is out of range (want more than 0)", cfg.handshakeTimeout)
	case cfg.pprof && cfg.metricsListen == "":
		return errors.New("--pprof: needs --metrics-listen")
	case cfg.clientsShowAddr && cfg.metricsListen == "":
		return errors.New("--clients-show-addr: needs --metrics-listen")
	case len(cfg.webOrigins) > 0 && cfg.webListen == "":
		return errors.New("--web-origin: needs --web-listen")
	}
	if err := checkOriginPatterns(cfg.webOrigins); err != nil {
		return err
	}
	return cfg.validateBackplane()
}

// parseSlow returns the slow-client policy named s.
func parseSlow(s string) (slowPolicy, error) {
	for i, name := range slowNames {
		if s == name {
			return slowPolicy(i), nil
		}
	}
	return 0, fmt.Errorf("unknown value %q (want %s)", s, strings.Join(slowNames, ", "))
}

// parseLevel returns the log level named s; only the four documented ones.
func parseLevel(s string) (zerolog.Level, error) {
	switch s {
	case "debug", "info", "warn", "error":
		return zerolog.ParseLevel(s)
	}
	return 0, fmt.Errorf("unknown value %q (want debug, info, warn, error)", s)
}

var sizeUnits = []struct {
	suffix string
	shift  uint
}{{"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"G", 30}, {"M", 20}, {"K", 10}, {"B", 0}}

// parseSize reads a byte count up to maxSize: a plain number, or one with a
// binary suffix (KiB, MiB, GiB, or K, M, G), as in "65536", "64KiB" and
// "4MiB".
func parseSize(s string) (int, error) {
	num, shift := strings.TrimSpace(s), uint(0)
	for _, u := range sizeUnits {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, shift = strings.TrimSpace(rest), u.shift
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > maxSize>>shift {
		return 0, fmt.Errorf("invalid size %q (want a number of bytes, optionally with KiB, MiB or GiB, up to 1GiB)", s)
	}
	return int(n) << shift, nil
}

// formatSize writes n the way parseSize reads it, with the largest exact unit.
func formatSize(n int) string {
	for _, u := range sizeUnits[:3] {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return strconv.Itoa(n>>u.shift) + u.suffix
		}
	}
	return strconv.Itoa(n)
}
