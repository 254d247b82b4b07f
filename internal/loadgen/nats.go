package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/nats-io/nats.go"
)

// natsSyncQueue bounds the messages nats.go holds for a subscriber that has
// not read them yet (nats.SyncQueueLen; its default, 65536, preallocates
// 512 KiB per subscriber). Past it nats.go drops messages, which the
// subscriber counts as lost.
const natsSyncQueue = 8192

// A natsTarget is NATS core pub/sub (--addr nats://HOST:PORT, or tls:// for
// TLS), driven with nats.go. Every subscriber and every publisher is one
// connection, without reconnects, so that a connection the server closes
// counts as a disconnect as over TCP. A message is one PUB of the payload of
// --size bytes as --framing defines it (in line framing it ends in '\n').
type natsTarget struct {
	// Immutable after newNATSTarget.
	urls      []string
	subject   string
	tlsConfig *tls.Config
}

// newNATSTarget returns the target of the nodes' URLs.
func newNATSTarget(opts Options, urls []string) *natsTarget {
	return &natsTarget{urls: urls, subject: channelName(), tlsConfig: opts.TLSConfig}
}

func (t *natsTarget) kind() string    { return kindNATS }
func (t *natsTarget) nodes() []string { return t.urls }
func (t *natsTarget) close()          {}

// natsDialer is a nats.CustomDialer that records what it dials in a connSet.
type natsDialer struct{ conns *connSet }

func (d natsDialer) Dial(_, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	return d.conns.dial(ctx, addr, nil) // nats.go does the TLS handshake itself
}

// connect opens one connection to node, named name, dialled through conns.
func (t *natsTarget) connect(node int, name string, conns *connSet) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.NoReconnect(),
		nats.Timeout(dialTimeout),
		nats.SetCustomDialer(natsDialer{conns}),
		nats.SyncQueueLen(natsSyncQueue),
		nats.NoCallbacksAfterClientClose(),
		// Slow-consumer drops show as lost messages; nats.go would print them.
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
	}
	if t.tlsConfig != nil {
		opts = append(opts, nats.Secure(t.tlsConfig))
	}
	nc, err := nats.Connect(t.urls[node], opts...)
	if err != nil {
		return nil, fmt.Errorf("bench: dial %s: %w", t.urls[node], dialCause(conns.dialErr(err)))
	}
	return nc, nil
}

func (t *natsTarget) dialSub(ctx context.Context, node int) (subConn, error) {
	nc, err := t.connect(node, "echohub-bench-sub", new(connSet))
	if err != nil {
		return nil, err
	}
	sub, err := nc.SubscribeSync(t.subject)
	if err == nil {
		// A round trip: the server has registered the subscription.
		fctx, cancel := context.WithTimeout(ctx, dialTimeout)
		err = nc.FlushWithContext(fctx)
		cancel()
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("bench: subscribe %s: %w", t.urls[node], err)
	}
	return &natsSub{nc: nc, sub: sub}, nil
}

func (t *natsTarget) dialPub(_ context.Context, node int) (pubConn, error) {
	conns := new(connSet)
	nc, err := t.connect(node, "echohub-bench-pub", conns)
	if err != nil {
		return nil, err
	}
	return &natsPub{nc: nc, conns: conns, subject: t.subject}, nil
}

// A natsSub is one subscriber's NATS connection.
type natsSub struct {
	nc  *nats.Conn
	sub *nats.Subscription
}

func (c *natsSub) receive(deliver func([]byte, int64)) error {
	m, err := c.sub.NextMsgWithContext(context.Background())
	if err != nil {
		// The server's -ERR, such as "slow consumer", says more than
		// "connection closed".
		if last := c.nc.LastError(); last != nil && errors.Is(err, nats.ErrConnectionClosed) {
			return fmt.Errorf("%w: %w", err, last)
		}
		return err
	}
	deliver(m.Data, nanotime())
	return nil
}

func (c *natsSub) close() error {
	c.nc.Close() // unblocks NextMsgWithContext
	return nil
}

// A natsPub is one publisher's NATS connection.
type natsPub struct {
	// Immutable after dialPub.
	nc      *nats.Conn
	conns   *connSet
	subject string

	// Owned by the publisher.
	published uint64 // messages nats.go accepted
}

// write hands the message to nats.go, which buffers it and writes it from
// its flusher goroutine; when its buffer is full, Publish writes in line and
// blocks, which is the server's backpressure.
func (p *natsPub) write(_, payload []byte) error {
	if err := p.nc.Publish(p.subject, payload); err != nil {
		return err
	}
	p.published++
	return nil
}

func (p *natsPub) probe(_, payload []byte) error { return p.nc.Publish(p.subject, payload) }

// flush leaves batches to nats.go's flusher. The final flush is a PING round
// trip: once the PONG is back, the server has read every message.
func (p *natsPub) flush(final bool) error {
	if !final {
		return nil
	}
	return p.nc.FlushTimeout(flushGrace + time.Second)
}

// sent counts what nats.go accepted: after a final flush that succeeded, all
// of it reached the server; after one that failed, the publisher reports
// the error.
func (p *natsPub) sent() uint64 { return p.published }
func (p *natsPub) readLoop()    {} // nothing comes back: the publisher subscribes to nothing
func (p *natsPub) abort()       { p.conns.closeAll() }

func (p *natsPub) close() error {
	p.nc.Close()
	return nil
}
