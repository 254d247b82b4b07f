package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// errServerClosed is returned by Serve after Shutdown, as net/http does.
var errServerClosed = errors.New("echohub: server closed")

const (
	// noticeTimeout bounds the write of the server-full notice, which the
	// accept loop makes itself.
	noticeTimeout = 100 * time.Millisecond
	// Accept backoff on temporary errors such as EMFILE, as in net/http.
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// A server accepts connections and runs one hub for them. Use newServer, then
// Serve and Shutdown.
type server struct {
	// Immutable after newServer.
	cfg config
	log zerolog.Logger
	m   *metrics
	hub *hub

	nextID       atomic.Uint64
	inShutdown   atomic.Bool
	hubOnce      sync.Once
	shutdownOnce sync.Once
	quit         chan struct{}  // closed when Shutdown begins
	wg           sync.WaitGroup // the hub and every connection's goroutines

	mu      sync.Mutex
	ln      net.Listener         // set by Serve
	conns   map[*client]struct{} // admitted connections not yet finished
	serving chan struct{}        // closed when the accept loop has returned

	// Has its own lock; handle adds to it as each client's close is finished.
	closed *closedRing // the last clients closed, for /clients
}

// newServer returns a server for cfg that logs to log.
func newServer(cfg config, log zerolog.Logger) *server {
	m := new(metrics)
	return &server{
		cfg:     cfg,
		log:     log,
		m:       m,
		hub:     newHub(cfg, log, m),
		closed:  newClosedRing(closedRingSize),
		conns:   make(map[*client]struct{}),
		serving: make(chan struct{}),
		quit:    make(chan struct{}),
	}
}

// Serve accepts connections on ln until Shutdown, and then returns
// errServerClosed. It returns another error if accepting fails for good; the
// caller then calls Shutdown to close the clients gracefully. Serve may be
// called once; it takes ownership of ln.
func (s *server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.ln != nil || s.inShutdown.Load() {
		s.mu.Unlock()
		ln.Close()
		return errServerClosed
	}
	s.ln = ln
	s.mu.Unlock()
	defer close(s.serving)
	s.startHub()
	s.log.Info().Str("addr", ln.Addr().String()).Str("framing", s.cfg.framing.String()).Msg("listening")
	err := s.acceptLoop(ln)
	if s.inShutdown.Load() {
		return errServerClosed
	}
	return err
}

// startHub starts the hub goroutine once; it returns after Shutdown.
func (s *server) startHub() {
	s.hubOnce.Do(func() {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.hub.run()
		}()
	})
}

// acceptLoop accepts until the listener fails for good, backing off on
// temporary errors such as EMFILE.
func (s *server) acceptLoop(ln net.Listener) error {
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.inShutdown.Load() || errors.Is(err, net.ErrClosed) {
				return err
			}
			var t interface{ Temporary() bool }
			if errors.As(err, &t) && t.Temporary() {
				backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
				s.m.acceptErrors.Add(1)
				s.log.Warn().Err(err).Dur("backoff", backoff).Msg("accept failed; retrying")
				select {
				case <-time.After(backoff):
				case <-s.quit:
				}
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		backoff = 0
		s.m.connections.Add(1)
		if tc, ok := conn.(*net.TCPConn); ok && s.cfg.sendBuffer > 0 {
			tc.SetWriteBuffer(s.cfg.sendBuffer)
		}
		if c := s.admit(conn); c != nil {
			go s.handle(c)
		}
	}
}

// admit registers conn as a client, or refuses it with one notice line before
// any goroutine starts for it.
func (s *server) admit(conn net.Conn) *client {
	s.mu.Lock()
	full := s.cfg.maxClients > 0 && len(s.conns) >= s.cfg.maxClients
	var c *client
	if !full {
		c = newClient(s.nextID.Add(1), conn, s.hub, s.log)
		s.conns[c] = struct{}{}
		s.wg.Add(1)
	}
	s.mu.Unlock()
	if full {
		s.m.closes[reasonServerFull].Add(1)
		s.log.Warn().Str("remote", conn.RemoteAddr().String()).Str("reason", reasonServerFull.String()).
			Int("max_clients", s.cfg.maxClients).Msg("client refused")
		conn.SetWriteDeadline(time.Now().Add(noticeTimeout))
		conn.Write(s.cfg.framing.encodeNotice(fmt.Sprintf("echohub: server full (max %d clients); closing", s.cfg.maxClients)))
		conn.Close()
	}
	return c
}

// handle runs one client: it registers c with the hub, starts its writer and
// reads until the connection ends. It returns when both loops have returned
// and the connection is closed.
func (s *server) handle(c *client) {
	defer s.wg.Done()
	c.log.Debug().Msg("client connected")
	if s.hub.register(c) {
		go c.writeLoop()
		r := c.readLoop()
		c.setReason(r)
		if r == reasonReadError {
			c.close(r) // the connection is broken: stop the writer too
		}
		s.hub.unregister(c)
		<-c.writerDone
	}
	c.close(reasonShutdown) // the reason only counts if none was recorded
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()

	r := c.closeReason()
	s.closed.add(c.closedInfo(r, time.Now())) // before the count: who sees the count finds the row
	s.m.closes[r].Add(1)
	c.log.WithLevel(r.level()).Str("reason", r.String()).Dur("dur", time.Since(c.connectedAt)).
		Uint64("msgs_in", c.msgsIn.Load()).Uint64("msgs_out", c.msgsOut.Load()).
		Uint64("bytes_in", c.bytesIn.Load()).Uint64("bytes_out", c.bytesOut.Load()).
		Uint64("dropped", c.dropped.Load()).Msg("client closed")
}

// Shutdown stops the server gracefully:
//  1. close the listener, so no client is admitted any more;
//  2. set every connection's read deadline to now, so readers stop after
//     handing the hub every complete message they have read;
//  3. once every reader has left, the hub closes every send channel, so
//     writers flush their queues and close their connections;
//  4. wait for that until ctx is done, and
//  5. then force-close whatever is left.
//
// It returns ctx's error if it had to force-close, and nil otherwise.
func (s *server) Shutdown(ctx context.Context) error {
	s.inShutdown.Store(true)
	s.hub.closing.Store(true)
	s.shutdownOnce.Do(func() { close(s.quit) })
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	if ln != nil {
		ln.Close()
		<-s.serving // no admit runs after this
	}
	s.startHub() // so that the hub's exit below never waits on a hub never started
	now := time.Now()
	s.mu.Lock()
	for c := range s.conns {
		c.conn.SetReadDeadline(now)
	}
	s.mu.Unlock()
	s.hub.stopOnce.Do(func() { close(s.hub.stop) })

	finished := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(finished)
	}()
	var err error
	select {
	case <-finished:
	case <-ctx.Done():
		err = ctx.Err()
		s.mu.Lock()
		for c := range s.conns {
			c.close(reasonShutdown)
		}
		s.mu.Unlock()
		<-finished
	}
	s.log.Info().Err(err).Msg("shutdown complete")
	return err
}
