package loadgen

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/coder/websocket"
)

// A wsTarget is a broadcast hub over WebSocket (--ws, or --addr ws://... or
// wss://...), driven with coder/websocket. One message is one WebSocket
// message, as echohub's web listener frames it: in line framing a text
// message holding the line without its '\n', in len32 framing a binary
// message holding the frame's payload. --size counts the message as over
// TCP: in line framing the text message is --size - 1 bytes.
type wsTarget struct {
	// Immutable after newWSTarget.
	urls    []string
	framing string
	size    int
	client  *http.Client // its own transport: no proxy from the environment
}

// newWSTarget returns the target of the nodes' URLs; with TLS, ws:// becomes
// wss://.
func newWSTarget(opts Options, urls []string) *wsTarget {
	t := &wsTarget{framing: opts.Framing, size: opts.Size}
	for _, u := range urls {
		if opts.TLSConfig != nil {
			if rest, ok := strings.CutPrefix(u, "ws://"); ok {
				u = "wss://" + rest
			}
		}
		t.urls = append(t.urls, u)
	}
	tr := &http.Transport{
		DialContext:     (&net.Dialer{Timeout: dialTimeout}).DialContext,
		TLSClientConfig: opts.TLSConfig,
	}
	t.client = &http.Client{Transport: tr}
	return t
}

func (t *wsTarget) kind() string    { return kindWS }
func (t *wsTarget) nodes() []string { return t.urls }

// close drops the transport's idle connections; the upgraded ones left its
// pool at the handshake.
func (t *wsTarget) close() { t.client.CloseIdleConnections() }

// dial opens one WebSocket connection to node.
func (t *wsTarget) dial(ctx context.Context, node int) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout) // the handshake only
	defer cancel()
	c, _, err := websocket.Dial(ctx, t.urls[node], &websocket.DialOptions{
		HTTPClient:      t.client,
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, fmt.Errorf("bench: dial %s: %w", t.urls[node], dialCause(err))
	}
	c.SetReadLimit(int64(maxSize) + 1) // a longer message closes the connection (1009)
	return c, nil
}

func (t *wsTarget) dialSub(ctx context.Context, node int) (subConn, error) {
	c, err := t.dial(ctx, node)
	if err != nil {
		return nil, err
	}
	return &wsSub{conn: c, framing: t.framing, buf: make([]byte, t.size+1)}, nil
}

func (t *wsTarget) dialPub(ctx context.Context, node int) (pubConn, error) {
	c, err := t.dial(ctx, node)
	if err != nil {
		return nil, err
	}
	typ := websocket.MessageBinary
	if t.framing == Line {
		typ = websocket.MessageText
	}
	return &wsPub{conn: c, framing: t.framing, typ: typ}, nil
}

// A wsSub is one subscriber's WebSocket connection.
type wsSub struct {
	// Immutable after dialSub.
	conn    *websocket.Conn
	framing string

	// Owned by the subscriber's readLoop.
	buf []byte // one message and the '\n' line framing adds back; grows for a longer one
}

// receive reads one WebSocket message. In line framing it puts back the '\n'
// and delivers each line (README: a message with '\n' inside is several
// lines), so that the accounting sees the bytes a TCP subscriber would.
func (c *wsSub) receive(deliver func([]byte, int64)) error {
	// No Done channel on the context: coder/websocket then arms no timer
	// per read.
	_, r, err := c.conn.Reader(context.Background())
	if err != nil {
		return err
	}
	b := c.buf[:0]
	for {
		if len(b) == len(c.buf)-1 { // keep a byte for the '\n'; the read limit bounds the growth
			c.buf = append(c.buf, make([]byte, len(c.buf))...)
			b = c.buf[:len(b)]
		}
		n, err := r.Read(c.buf[len(b) : len(c.buf)-1])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	now := nanotime()
	if c.framing != Line {
		deliver(b, now)
		return nil
	}
	b = append(b, '\n')
	for len(b) > 0 {
		line, k, _ := nextFrame(Line, b, 0) // b ends in '\n': k > 0
		deliver(line, now)
		b = b[k:]
	}
	return nil
}

func (c *wsSub) close() error { return c.conn.CloseNow() }

// A wsPub is one publisher's WebSocket connection.
type wsPub struct {
	// Immutable after dialPub.
	conn    *websocket.Conn
	framing string
	typ     websocket.MessageType

	// Owned by the publisher.
	written uint64 // messages written in full
}

// write sends one WebSocket message; coder/websocket flushes each one.
func (p *wsPub) write(_, payload []byte) error {
	if err := p.probe(nil, payload); err != nil {
		return err
	}
	p.written++
	return nil
}

func (p *wsPub) probe(_, payload []byte) error {
	if p.framing == Line {
		payload = payload[:len(payload)-1] // the message is the line without its '\n'
	}
	return p.conn.Write(context.Background(), p.typ, payload)
}

func (p *wsPub) flush(bool) error { return nil }
func (p *wsPub) sent() uint64     { return p.written }

// readLoop drains what the hub echoes to the sender, so that the publisher is
// never a slow client, and answers pings on the way.
func (p *wsPub) readLoop() {
	for {
		_, r, err := p.conn.Reader(context.Background())
		if err != nil {
			return
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			return
		}
	}
}

func (p *wsPub) abort()       { _ = p.conn.CloseNow() }
func (p *wsPub) close() error { return p.conn.CloseNow() }
