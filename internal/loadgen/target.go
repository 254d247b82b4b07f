package loadgen

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// The kinds of server a run can drive, as Result.Target names them.
const (
	kindTCP   = "tcp"   // a line or len32 broadcast hub over TCP: echohub, ncat --broker
	kindWS    = "ws"    // a broadcast hub over WebSocket, one message per WebSocket message
	kindRedis = "redis" // Redis pub/sub, one PUBLISH per message
	kindNATS  = "nats"  // NATS core pub/sub, one PUB per message
)

// A target opens the connections of a run to one kind of server, on one or
// more nodes. Subscriber i and publisher i go to node i modulo the number of
// nodes, so that both are spread round-robin.
type target interface {
	kind() string
	nodes() []string
	dialSub(ctx context.Context, node int) (subConn, error)
	dialPub(ctx context.Context, node int) (pubConn, error)
	close() // after every connection is closed
}

// A subConn is one subscriber's connection. Its readLoop is the only caller
// of receive; close may be called from any goroutine, and more than once.
type subConn interface {
	// receive waits for the next read's worth of messages and calls deliver
	// once for each payload (as --framing defines it), with the time it
	// arrived. A payload is valid only during the call. receive returns the
	// error that ended the connection, or nil after a read.
	receive(deliver func(payload []byte, now int64)) error
	close() error // unblocks receive
}

// A pubConn is one publisher's connection. Its publisher is the only caller
// of write, flush and sent; abort and close may be called from any goroutine.
type pubConn interface {
	// write queues one message. frame is the message as it travels on a TCP
	// connection in --framing, payload the message itself, inside frame.
	write(frame, payload []byte) error
	// probe sends a probe at once, as write and flush would, but it does not
	// count as sent.
	probe(frame, payload []byte) error
	// flush pushes what write queued toward the server; with final, it waits
	// until the server has it, where the protocol can tell.
	flush(final bool) error
	sent() uint64 // messages that left in full
	readLoop()    // reads and discards what the server sends back; returns when the connection closes
	abort()       // unblocks a write or flush, which then fail
	close() error
}

// parseAddr reads --addr: one address, or several separated by commas, all
// of one kind. HOST:PORT is a line-based TCP hub, or with ws its WebSocket
// endpoint ws://HOST:PORT/ws; a URL names the kind by its scheme.
func parseAddr(addr string, ws bool) (kind string, nodes []string, err error) {
	for _, a := range strings.Split(addr, ",") {
		a = strings.TrimSpace(a)
		k := kindTCP
		switch {
		case a == "":
			return "", nil, fmt.Errorf("--addr: empty address in %q", addr)
		case strings.Contains(a, "://"):
			u, err := url.Parse(a)
			if err != nil {
				return "", nil, fmt.Errorf("--addr: %w", err)
			}
			switch u.Scheme {
			case "redis", "rediss":
				k = kindRedis
			case "nats", "tls":
				k = kindNATS
			case "ws", "wss":
				k = kindWS
			default:
				return "", nil, fmt.Errorf("--addr: unknown scheme %q in %q (want redis, rediss, nats, tls, ws, wss, or HOST:PORT for a TCP hub)", u.Scheme, a)
			}
			if u.Host == "" {
				return "", nil, fmt.Errorf("--addr: no host in %q", a)
			}
			if ws && k != kindWS {
				return "", nil, fmt.Errorf("--ws: needs HOST:PORT or ws:// addresses, got %q", a)
			}
		default:
			if _, _, err := net.SplitHostPort(a); err != nil {
				return "", nil, fmt.Errorf("--addr: %w", err)
			}
			if ws {
				k, a = kindWS, "ws://"+a+"/ws"
			}
		}
		if kind != "" && k != kind {
			return "", nil, fmt.Errorf("--addr: mixes %s and %s addresses", kind, k)
		}
		kind = k
		nodes = append(nodes, a)
	}
	return kind, nodes, nil
}

// newTarget returns the target opts.Addr names; opts must be valid.
func newTarget(opts Options) (target, error) {
	kind, nodes, err := parseAddr(opts.Addr, opts.WS)
	if err != nil {
		return nil, err
	}
	switch kind {
	case kindWS:
		return newWSTarget(opts, nodes), nil
	case kindRedis:
		return newRedisTarget(opts, nodes)
	case kindNATS:
		return newNATSTarget(opts, nodes), nil
	}
	return &tcpTarget{opts: opts, addrs: nodes}, nil
}

// channelName returns the Redis channel or NATS subject of one run: a fresh
// one, so that concurrent runs against one server do not see each other's
// messages.
func channelName() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails
	return "echohub-bench." + hex.EncodeToString(b)
}

// dialCause strips what a dial error repeats of "dial ADDR", leaving its
// cause ("connection refused"), which errors.Is still sees through.
func dialCause(err error) error {
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

// dialTCP opens a TCP connection to addr, with TLS if config is set. An
// empty config.ServerName is taken from addr.
func dialTCP(ctx context.Context, addr string, config *tls.Config) (net.Conn, error) {
	d := &net.Dialer{Timeout: dialTimeout}
	if config != nil {
		return (&tls.Dialer{NetDialer: d, Config: config}).DialContext(ctx, "tcp", addr)
	}
	return d.DialContext(ctx, "tcp", addr)
}

// A connSet is the raw connections a client library dialled for one
// subscriber or publisher, so that abort can close them under the library:
// go-redis and nats.go hold their locks while they write.
type connSet struct {
	mu      sync.Mutex // guards the fields below
	conns   []net.Conn
	closed  bool
	lastErr error // of the last dial that failed
}

// dial opens a TCP connection (TLS if config is set) and records it.
func (s *connSet) dial(ctx context.Context, addr string, config *tls.Config) (net.Conn, error) {
	c, err := dialTCP(ctx, addr, config)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.lastErr = err
		return nil, err
	}
	if s.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	s.conns = append(s.conns, c)
	return c, nil
}

// dialErr returns the error of the last dial that failed, or else err: a
// client library's "no servers available" says less than "connection
// refused".
func (s *connSet) dialErr(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastErr != nil {
		return s.lastErr
	}
	return err
}

// closeAll closes every connection dialled, and any dialled later.
func (s *connSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, c := range s.conns {
		_ = c.Close()
	}
}

// A tcpTarget is a broadcast hub that speaks --framing over TCP.
type tcpTarget struct {
	opts  Options
	addrs []string
}

func (t *tcpTarget) kind() string    { return kindTCP }
func (t *tcpTarget) nodes() []string { return t.addrs }
func (t *tcpTarget) close()          {}

// dial opens one connection to node, TLS if configured.
func (t *tcpTarget) dial(ctx context.Context, node int) (net.Conn, error) {
	c, err := dialTCP(ctx, t.addrs[node], t.opts.TLSConfig)
	if err != nil {
		return nil, fmt.Errorf("bench: dial %s: %w", t.addrs[node], dialCause(err))
	}
	return c, nil
}

func (t *tcpTarget) dialSub(ctx context.Context, node int) (subConn, error) {
	c, err := t.dial(ctx, node)
	if err != nil {
		return nil, err
	}
	wire := wireSize(t.opts.Framing, t.opts.Size)
	return &tcpSub{conn: c, framing: t.opts.Framing, wire: wire, buf: make([]byte, max(readBuffer, 2*wire))}, nil
}

func (t *tcpTarget) dialPub(ctx context.Context, node int) (pubConn, error) {
	c, err := t.dial(ctx, node)
	if err != nil {
		return nil, err
	}
	wire := wireSize(t.opts.Framing, t.opts.Size)
	return &tcpPub{conn: c, wire: wire, w: bufio.NewWriterSize(c, max(writeBuffer, wire))}, nil
}

// A tcpSub is a subscriber's TCP connection and its read buffer.
type tcpSub struct {
	// Immutable after dialSub.
	conn    net.Conn
	framing string
	wire    int // bytes of one message on the connection

	// Owned by the subscriber's readLoop.
	buf        []byte // at least two messages
	start, end int    // buf[start:end] is read but not yet delivered
}

func (c *tcpSub) receive(deliver func([]byte, int64)) error {
	n, err := c.conn.Read(c.buf[c.end:])
	if n == 0 {
		return err
	}
	now := nanotime() // one receive time for everything this read completed
	c.end += n
	for c.start < c.end {
		payload, k, ferr := nextFrame(c.framing, c.buf[c.start:c.end], len(c.buf)-4)
		if ferr != nil {
			// The stream cannot be resynchronised: give up on it.
			_ = c.conn.Close()
			return ferr
		}
		if k == 0 {
			break
		}
		deliver(payload, now)
		c.start += k
	}
	switch {
	case c.start == c.end:
		c.start, c.end = 0, 0
	case c.start == 0 && c.end == len(c.buf):
		// A line longer than the buffer, so longer than any message:
		// deliver it to be counted as corrupt, and drop it.
		deliver(c.buf, now)
		c.start, c.end = 0, 0
	case len(c.buf)-c.end < c.wire: // make room for a whole message
		c.end = copy(c.buf, c.buf[c.start:c.end])
		c.start = 0
	}
	return err
}

func (c *tcpSub) close() error { return c.conn.Close() }

// A tcpPub is a publisher's TCP connection, written through a bufio.Writer.
type tcpPub struct {
	// Immutable after dialPub.
	conn net.Conn
	wire int

	// Owned by the publisher.
	w        *bufio.Writer
	accepted int64 // bytes w accepted: written, or buffered
}

func (p *tcpPub) write(frame, _ []byte) error {
	n, err := p.w.Write(frame)
	p.accepted += int64(n)
	return err
}

func (p *tcpPub) flush(bool) error { return p.w.Flush() }

// probe writes past the bufio.Writer, which holds nothing before the run.
func (p *tcpPub) probe(frame, _ []byte) error {
	_, err := p.conn.Write(frame)
	return err
}

// sent counts only whole messages that left the buffer.
func (p *tcpPub) sent() uint64 { return uint64(p.accepted-int64(p.w.Buffered())) / uint64(p.wire) }

// readLoop drains what the hub echoes to the sender, so that the publisher
// is never a slow client.
func (p *tcpPub) readLoop() { _, _ = io.Copy(io.Discard, p.conn) }

// abort fails the write in progress with a timeout, as a write deadline
// would, and leaves the connection open for what it already sent.
func (p *tcpPub) abort() { _ = p.conn.SetWriteDeadline(time.Unix(1, 0)) }

func (p *tcpPub) close() error { return p.conn.Close() }
