package loadgen

import (
	"context"
	"fmt"
	"net"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// A redisTarget is Redis pub/sub (--addr redis://HOST:PORT, or rediss:// for
// TLS), driven with go-redis. Every subscriber is one connection subscribed
// to the run's channel; every publisher is one connection that pipelines its
// PUBLISH commands, one round trip per batch. A message is the payload of
// --size bytes as --framing defines it (in line framing it ends in '\n').
type redisTarget struct {
	// Immutable after newRedisTarget.
	urls    []string
	options []*redis.Options // per node, from the URL
	channel string
}

// newRedisTarget parses the nodes' URLs.
func newRedisTarget(opts Options, urls []string) (*redisTarget, error) {
	t := &redisTarget{urls: urls, channel: channelName()}
	for _, u := range urls {
		o, err := redis.ParseURL(u)
		if err != nil {
			return nil, fmt.Errorf("--addr: %w", err)
		}
		if opts.TLSConfig != nil {
			o.TLSConfig = opts.TLSConfig
		}
		t.options = append(t.options, o)
	}
	return t, nil
}

func (t *redisTarget) kind() string    { return kindRedis }
func (t *redisTarget) nodes() []string { return t.urls }
func (t *redisTarget) close()          {}

// client returns a client of node with at most one connection, dialled
// through conns.
func (t *redisTarget) client(node int, conns *connSet) *redis.Client {
	o := *t.options[node]
	tlsConfig := o.TLSConfig
	o.Dialer = func(ctx context.Context, _, addr string) (net.Conn, error) {
		return conns.dial(ctx, addr, tlsConfig)
	}
	o.Protocol = 2           // RESP2: plain pub/sub replies, no HELLO
	o.DisableIdentity = true // no CLIENT SETINFO on connect
	o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	o.PoolSize, o.MinIdleConns = 1, 0
	o.MaxRetries = -1 // a failed PUBLISH is reported, not retried
	o.DialTimeout = dialTimeout
	o.ReadTimeout, o.WriteTimeout = -1, -1 // no deadlines: a blocked write is backpressure, and abort ends it
	return redis.NewClient(&o)
}

func (t *redisTarget) dialSub(ctx context.Context, node int) (subConn, error) {
	conns := new(connSet)
	c := t.client(node, conns)
	ps := c.Subscribe(ctx, t.channel)
	// The confirmation says the server has registered the subscriber.
	m, err := ps.ReceiveTimeout(ctx, dialTimeout)
	if err == nil {
		if _, ok := m.(*redis.Subscription); !ok {
			err = fmt.Errorf("unexpected reply %T to SUBSCRIBE", m)
		}
	}
	if err != nil {
		_ = ps.Close()
		_ = c.Close()
		return nil, fmt.Errorf("bench: subscribe %s: %w", t.urls[node], dialCause(conns.dialErr(err)))
	}
	return &redisSub{client: c, ps: ps}, nil
}

func (t *redisTarget) dialPub(ctx context.Context, node int) (pubConn, error) {
	conns := new(connSet)
	c := t.client(node, conns)
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("bench: dial %s: %w", t.urls[node], dialCause(conns.dialErr(err)))
	}
	return &redisPub{client: c, conns: conns, pipe: c.Pipeline(), channel: t.channel}, nil
}

// A redisSub is one subscriber's Redis connection.
type redisSub struct {
	// Immutable after dialSub.
	client *redis.Client
	ps     *redis.PubSub

	// Owned by the subscriber's readLoop.
	buf []byte // the payload of the last message
}

func (c *redisSub) receive(deliver func([]byte, int64)) error {
	// go-redis would reconnect and resubscribe on the next call after an
	// error; the subscriber's readLoop makes no next call, so a subscriber
	// that lost its connection stays lost, as over TCP.
	m, err := c.ps.ReceiveMessage(context.Background())
	if err != nil {
		return err
	}
	now := nanotime()
	c.buf = append(c.buf[:0], m.Payload...)
	deliver(c.buf, now)
	return nil
}

func (c *redisSub) close() error {
	_ = c.ps.Close() // unblocks ReceiveMessage
	return c.client.Close()
}

// A redisPub is one publisher's Redis connection.
type redisPub struct {
	// Immutable after dialPub.
	client  *redis.Client
	conns   *connSet
	channel string

	// Owned by the publisher.
	pipe   redis.Pipeliner
	queued int    // PUBLISH commands in pipe
	done   uint64 // PUBLISH commands the server answered
}

func (p *redisPub) write(_, payload []byte) error {
	p.pipe.Publish(context.Background(), p.channel, string(payload))
	p.queued++
	return nil
}

// flush sends the queued commands and waits for their replies: PUBLISH is
// request and response, so every flush is a round trip.
func (p *redisPub) flush(bool) error {
	if p.queued == 0 {
		return nil
	}
	cmds, err := p.pipe.Exec(context.Background())
	for _, c := range cmds {
		if c.Err() == nil {
			p.done++
		}
	}
	p.queued = 0
	return err
}

func (p *redisPub) probe(_, payload []byte) error {
	return p.client.Publish(context.Background(), p.channel, payload).Err()
}

func (p *redisPub) sent() uint64 { return p.done }
func (p *redisPub) readLoop()    {} // Redis sends a publisher nothing but replies
func (p *redisPub) abort()       { p.conns.closeAll() }
func (p *redisPub) close() error { return p.client.Close() }
