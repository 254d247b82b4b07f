package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"
)

// Headers on every backplane message, and the stream metadata a node checks.
const (
	hdrNode         = "Echohub-Node"  // id of the node whose client sent it (random per process)
	hdrParts        = "Echohub-Parts" // the reads in the data: "client:bytes:messages ..." (client ids for --exclude-sender)
	hdrCount        = "Echohub-Count" // complete framed messages in the data
	metaFraming     = "echohub_framing"
	metaMaxMessage  = "echohub_max_message"
	bpHeaderReserve = 512 // bytes of headers and subject a message carries beside its data, at most
)

const (
	// bpConnectTimeout bounds one attempt to reach a NATS server.
	bpConnectTimeout = 2 * time.Second
	// bpRequestTimeout bounds a JetStream API request (stream info, create).
	bpRequestTimeout = 5 * time.Second
	// bpAckTimeout is how long a publish may wait for its acknowledgement
	// before it is sent again, with the same message id.
	bpAckTimeout = 2 * time.Second
	// bpDuplicateWindowMin and bpDuplicateWindow bound JetStream's
	// deduplication window on a stream this node creates: a message sent
	// again within it is stored once. It is never longer than --backplane-max-age.
	bpDuplicateWindowMin = time.Second
	bpDuplicateWindow    = 2 * time.Minute
	// Reconnect backoff: from bpBackoffMin, doubling to bpBackoffMax.
	bpBackoffMin = 50 * time.Millisecond
	bpBackoffMax = 2 * time.Second
	// bpMaxWindow bounds --backplane-window.
	bpMaxWindow = 16384
	// bpInfoEvery is how often a connected node asks for the stream's last
	// sequence, for echohub_backplane_lag_messages while it delivers nothing.
	bpInfoEvery = time.Second
)

// errBackplaneAborted is how the backplane's loops end when Shutdown gives up.
var errBackplaneAborted = errors.New("backplane aborted")

// A backplane makes this node one of several serving one stream in one order
// (README, docs/cluster.md). Readers hand their messages to in instead of the
// hub's publish; the publisher (publishLoop) publishes each to the JetStream
// stream; the consumer (consume) hands the hub, in stream order, everything
// the stream holds from the moment this node started: its own clients'
// messages too. run owns the connection and replaces it when it fails.
type backplane struct {
	// Immutable after dialBackplane (hub by attach, before run starts).
	cfg         config
	log         zerolog.Logger
	lossLog     zerolog.Logger // sampled: publish failures can come per message
	hub         *hub           // the hub the consumer feeds
	node        string         // this process's id: hdrNode, and the prefix of every message id
	maxFrame    int            // the largest read's worth: one largest message
	in          chan message   // from readers, cap publishQueue; never closed
	readersGone chan struct{}  // closed by the hub once it drains and every reader has left
	fed         chan struct{}  // closed when the consumer has handed the hub its last message
	abort       chan struct{}  // closed when Shutdown gives up, or by run as it returns: every backplane wait ends

	readersOnce sync.Once // closes readersGone
	abortOnce   sync.Once // closes abort

	// Accessed atomically: metrics and /readyz read them. The consumer
	// writes lastDelivered, and run while no consumer runs (reopen).
	up            atomic.Bool   // connected, the stream found, consuming
	lastDelivered atomic.Uint64 // stream sequence of the last message handed to the hub
	streamLast    atomic.Uint64 // highest stream sequence known to exist
	published     atomic.Uint64 // publishes acknowledged by JetStream
	received      atomic.Uint64 // stream messages handed to the hub
	lost          atomic.Uint64 // stream messages gone before this node delivered them
	reconnects    atomic.Uint64 // connections made after the first

	// Owned by run.
	sess        *bpSession // nil while disconnected
	inflight    *bpBatch   // published, not yet acknowledged; nil when none
	gather      []message  // reads taken from in since inflight was sent, in order
	gatherBytes int        // their data
	nextID      uint64     // message ids: node + "-" + nextID
	created     time.Time  // the stream's creation time: another one means it was recreated

	// Guarded by mu. senders (--exclude-sender): this node's registered
	// clients by id, so that the consumer can tell the hub which local
	// client, if any, sent a message; the hub adds and removes them.
	// progress is closed and replaced when a publish is acknowledged or a
	// message delivered while settle waits (waiters > 0).
	mu       sync.Mutex
	senders  map[uint64]*client
	progress chan struct{}
	waiters  atomic.Int32 // settle calls waiting
}

// A bpSession is one connection to NATS and what was set up on it.
type bpSession struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	closed chan struct{} // closed by nats.go once nc is closed (NoReconnect: on any disconnect)
}

// dialBackplane connects to --backplane, checks that it runs JetStream and
// finds or creates --backplane-stream, and checks that the stream carries
// this node's framing. It starts nothing else: run, started by the server,
// does. Its errors are one line naming the flag.
func dialBackplane(ctx context.Context, cfg config, log zerolog.Logger) (*backplane, error) {
	b := &backplane{
		cfg:         cfg,
		log:         log.With().Str("stream", cfg.bpStream).Logger(),
		node:        nuid.Next(),
		maxFrame:    cfg.framing.maxFrame(cfg.maxMessage),
		in:          make(chan message, publishQueue),
		readersGone: make(chan struct{}),
		fed:         make(chan struct{}),
		abort:       make(chan struct{}),
		senders:     make(map[uint64]*client),
		progress:    make(chan struct{}),
	}
	b.lossLog = b.log.Sample(&zerolog.BurstSampler{Burst: 5, Period: time.Second})
	sess, info, err := b.open(ctx)
	if err != nil {
		return nil, err
	}
	b.sess, b.created = sess, info.Created
	// A node that starts late delivers from the moment it joined, as a new
	// client does (README).
	b.lastDelivered.Store(info.State.LastSeq)
	b.streamLast.Store(info.State.LastSeq)
	b.log.Info().Str("url", sess.nc.ConnectedUrlRedacted()).Str("node", b.node).
		Uint64("seq", info.State.LastSeq).Msg("backplane connected")
	return b, nil
}

// open connects to NATS and finds or creates the stream. Its errors name the
// flag at fault.
func (b *backplane) open(ctx context.Context) (*bpSession, *jetstream.StreamInfo, error) {
	cfg := b.cfg
	urls := redactURLs(cfg.backplane) // for messages: a password in a URL stays out of logs
	closed := make(chan struct{})
	nc, err := nats.Connect(strings.Join(cfg.backplane, ","),
		nats.Name("echohub "+b.node),
		nats.NoReconnect(), // run reconnects: see publishLoop for why
		nats.Timeout(bpConnectTimeout),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			b.lossLog.Warn().Err(err).Msg("backplane error")
		}),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("--backplane %s: %w", urls, err)
	}
	sess := &bpSession{nc: nc, closed: closed}
	fail := func(err error) (*bpSession, *jetstream.StreamInfo, error) {
		nc.Close()
		return nil, nil, err
	}
	if need := b.maxFrame + bpHeaderReserve + bpPartHeader; int64(need) > nc.MaxPayload() {
		return fail(fmt.Errorf("--max-message: %d bytes do not fit the NATS server's max_payload (%d)", cfg.maxMessage, nc.MaxPayload()))
	}
	sess.js, err = jetstream.New(nc,
		// One message is in flight; room for the futures of its earlier
		// sends, which nats.go keeps until they time out.
		jetstream.WithPublishAsyncMaxPending(64),
		jetstream.WithPublishAsyncTimeout(bpAckTimeout),
		jetstream.WithDefaultTimeout(bpRequestTimeout))
	if err != nil {
		return fail(fmt.Errorf("--backplane %s: %w", urls, err))
	}
	rctx, cancel := context.WithTimeout(ctx, bpRequestTimeout)
	defer cancel()
	if _, err := sess.js.AccountInfo(rctx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			err = errNoJetStream
		}
		return fail(fmt.Errorf("--backplane %s: %w", nc.ConnectedUrlRedacted(), err))
	}
	sess.stream, err = b.findStream(rctx, sess.js)
	if err != nil {
		return fail(err)
	}
	info, err := sess.stream.Info(rctx)
	if err != nil {
		return fail(fmt.Errorf("--backplane-stream %s: %w", cfg.bpStream, err))
	}
	return sess, info, nil
}

// findStream returns --backplane-stream, created as the flags say if it is
// missing, after checking that it carries this node's framing.
func (b *backplane) findStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	cfg := b.cfg
	stream, err := js.Stream(ctx, cfg.bpStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		stream, err = js.CreateStream(ctx, b.streamConfig())
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			stream, err = js.Stream(ctx, cfg.bpStream) // another node created it first
		} else if err == nil {
			b.log.Info().Str("storage", cfg.bpStorage).Int("replicas", cfg.bpReplicas).
				Dur("max_age", cfg.bpMaxAge).Int("max_bytes", cfg.bpMaxBytes).Msg("backplane stream created")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("--backplane-stream %s: %w", cfg.bpStream, err)
	}
	meta := stream.CachedInfo().Config.Metadata
	if got := meta[metaFraming]; got != cfg.framing.String() {
		if got == "" {
			got = "none recorded (not made by echohub)"
		}
		return nil, fmt.Errorf("--backplane-stream %s: the stream's framing is %s; this node has --framing %s (every node on one stream needs the same)",
			cfg.bpStream, got, cfg.framing)
	}
	return stream, nil
}

// streamConfig is the stream this node creates when it finds none.
func (b *backplane) streamConfig() jetstream.StreamConfig {
	cfg := b.cfg
	storage := jetstream.MemoryStorage
	if cfg.bpStorage == "file" {
		storage = jetstream.FileStorage
	}
	dup := bpDuplicateWindow
	if cfg.bpMaxAge > 0 {
		dup = min(dup, cfg.bpMaxAge)
	}
	return jetstream.StreamConfig{
		Name:        cfg.bpStream,
		Description: "echohub backplane: one stream, in one order, for every node",
		Subjects:    []string{cfg.bpStream},
		Storage:     storage,
		Replicas:    cfg.bpReplicas,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      cfg.bpMaxAge,
		MaxBytes:    int64(cmpZero(cfg.bpMaxBytes, -1)),
		Duplicates:  dup,
		Metadata: map[string]string{
			metaFraming:    cfg.framing.String(),
			metaMaxMessage: strconv.Itoa(cfg.maxMessage),
		},
	}
}

// redactURLs joins urls with commas, passwords replaced by "xxxxx".
func redactURLs(urls []string) string {
	out := make([]string, len(urls))
	for i, raw := range urls {
		out[i] = raw
		if u, err := url.Parse(raw); err == nil {
			out[i] = u.Redacted()
		}
	}
	return strings.Join(out, ",")
}

// cmpZero returns v, or def when v is 0.
func cmpZero(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// attach makes b the backplane of h: readers hand b their messages and b's
// consumer feeds h. It runs before the server starts.
func (b *backplane) attach(h *hub) {
	b.hub = h
	h.bp = b
	// abort is closed before the hub can exit (the hub waits for fed), so
	// it stands for the hub's done.
	h.intake, h.intakeDone = b.in, b.abort
}

// remember and forget keep b.senders for --exclude-sender. The hub calls
// them as it adds and removes clients.
func (b *backplane) remember(c *client) {
	b.mu.Lock()
	b.senders[c.id] = c
	b.mu.Unlock()
}

func (b *backplane) forget(c *client) {
	b.mu.Lock()
	delete(b.senders, c.id)
	b.mu.Unlock()
}

// sender returns this node's registered client id, or nil.
func (b *backplane) sender(id uint64) *client {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.senders[id]
}

// settle waits until every message c sent has been acknowledged by JetStream
// and delivered back to this node, for at most --write-timeout, or until
// the server shuts down (c then stays registered anyway) or the backplane
// gives up. c's reader calls it after c half-closed, before it leaves the hub.
func (b *backplane) settle(c *client) {
	b.waiters.Add(1)
	defer b.waiters.Add(-1)
	limit := time.NewTimer(b.cfg.writeTimeout)
	defer limit.Stop()
	for {
		b.mu.Lock()
		progress := b.progress
		b.mu.Unlock()
		if c.bpAcked.Load() >= c.msgsIn.Load() && b.lastDelivered.Load() >= c.bpSeq.Load() {
			return
		}
		select {
		case <-progress:
		case <-limit.C:
			return
		case <-b.hub.stop:
			return
		case <-b.abort:
			return
		}
	}
}

// advanced wakes settle calls, if any: a publish was acknowledged or a
// message delivered. It costs one atomic load when nobody waits.
func (b *backplane) advanced() {
	if b.waiters.Load() == 0 {
		return
	}
	b.mu.Lock()
	close(b.progress)
	b.progress = make(chan struct{})
	b.mu.Unlock()
}

// readersLeft tells b that the server is shutting down and no reader will
// hand it anything more. The hub calls it, maybe more than once.
func (b *backplane) readersLeft() { b.readersOnce.Do(func() { close(b.readersGone) }) }

// stopNow makes every wait of the backplane end at once: Shutdown calls it
// when its deadline passes. Readers blocked on in then return.
func (b *backplane) stopNow() { b.abortOnce.Do(func() { close(b.abort) }) }

// discard closes the connection of a backplane whose run never started: the
// server was shut down before it served.
func (b *backplane) discard() {
	if b.sess != nil {
		b.sess.nc.Close()
		b.sess = nil
	}
}

// lag is the stream's last sequence minus the last one delivered.
func (b *backplane) lag() uint64 {
	last, done := b.streamLast.Load(), b.lastDelivered.Load()
	if last < done {
		return 0
	}
	return last - done
}

// seen records that the stream holds sequence seq.
func (b *backplane) seen(seq uint64) {
	for {
		old := b.streamLast.Load()
		if seq <= old || b.streamLast.CompareAndSwap(old, seq) {
			return
		}
	}
}
