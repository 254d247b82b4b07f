package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// errServerClosed is returned by Serve after Shutdown, as net/http does.
var errServerClosed = errors.New("server closed")

const (
	// noticeTimeout bounds the write of a refusal notice (server full, denied,
	// too many from one IP), which the accept loop makes itself.
	noticeTimeout = 100 * time.Millisecond
	// Accept backoff on temporary errors such as EMFILE, as in net/http.
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// A server accepts connections and runs one hub for them. Use newServer, then
// Serve and Shutdown.
type server struct {
	// Immutable after newServer.
	cfg     config
	log     zerolog.Logger
	m       *metrics
	hub     *hub
	bp      *backplane    // nil without --backplane; set by useBackplane before Serve
	quit    chan struct{} // closed, under mu, when Shutdown begins
	serving chan struct{} // closed when the accept loop has returned
	idle    chan struct{} // closed, under mu, once Shutdown has begun and no admitted connection is left; ends watchWrites

	nextID atomic.Uint64
	wg     sync.WaitGroup // the hub, watchWrites and every admitted connection's handle

	// Guarded by mu.
	mu    sync.Mutex
	ln    net.Listener         // set by Serve; nil until then
	web   *webServer           // set by listenWeb; nil without --web-listen
	conns map[*client]struct{} // admitted connections not yet released
	perIP map[netip.Addr]int   // admitted connections per remote IP, kept with --max-clients-per-ip

	// Has its own lock; release adds to it as each client's close is finished.
	closed *closedRing // the last clients closed, for /clients

	// Written by the accept loop, reported by its own goroutine (refusals.go).
	refusals *refusalLog
}

// newServer returns a server for cfg that logs to log.
func newServer(cfg config, log zerolog.Logger) *server {
	m := new(metrics)
	return &server{
		cfg:      cfg,
		log:      log,
		m:        m,
		hub:      newHub(cfg, log, m),
		quit:     make(chan struct{}),
		serving:  make(chan struct{}),
		idle:     make(chan struct{}),
		conns:    make(map[*client]struct{}),
		perIP:    make(map[netip.Addr]int),
		closed:   newClosedRing(closedRingSize),
		refusals: newRefusalLog(log),
	}
}

// Serve accepts connections on ln until Shutdown, and then returns
// errServerClosed. It returns another error if accepting fails for good; the
// caller then calls Shutdown to close the clients gracefully. Serve may be
// called once; it takes ownership of ln.
func (s *server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.ln != nil || s.shuttingDown() {
		s.mu.Unlock()
		ln.Close()
		return errServerClosed
	}
	s.ln = ln
	// Started under mu, so that Shutdown either sees ln set and waits for
	// these goroutines, or runs first and Serve starts none of them.
	// The hub returns after Shutdown, once every reader has left (and the
	// backplane, if any, has returned); watchWrites once idle is closed.
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.hub.run()
	}()
	if s.bp != nil {
		// It returns during Shutdown, once it has published what the
		// readers read and delivered it back, or Shutdown gives up.
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.bp.run()
		}()
	}
	go func() {
		defer s.wg.Done()
		s.watchWrites()
	}()
	s.mu.Unlock()
	defer close(s.serving)
	s.log.Info().Str("addr", ln.Addr().String()).Str("framing", s.cfg.framing.String()).
		Bool("tls", s.cfg.tls != nil).Msg("listening")
	stopReports, reported := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(reported)
		s.refusals.run(stopReports) // returns once stopReports is closed below
	}()
	err := s.acceptLoop(ln)
	close(stopReports)
	<-reported // the last count of suppressed refusals is logged before Serve returns
	if s.shuttingDown() {
		return errServerClosed
	}
	return err
}

// shuttingDown reports whether Shutdown has begun.
func (s *server) shuttingDown() bool {
	select {
	case <-s.quit:
		return true
	default:
		return false
	}
}

// useBackplane makes b, from dialBackplane, this server's backplane. It must
// be called before Serve.
func (s *server) useBackplane(b *backplane) {
	s.bp = b
	b.attach(s.hub)
}

// watchWrites enforces --write-timeout: it closes every client whose write
// has been in progress for that long (its peer stopped reading). One
// goroutine checking every client a few times per timeout is cheaper than a
// deadline armed per write, and keeps idle writers' stacks small. A write
// is cut within a tenth of the timeout (10 ms to 1 s) after it expires. It
// returns once idle is closed: writers drain their queues during Shutdown
// under the same bound.
func (s *server) watchWrites() {
	t := time.NewTicker(min(max(s.cfg.writeTimeout/10, 10*time.Millisecond), time.Second))
	defer t.Stop()
	for {
		select {
		case <-s.idle:
			return
		case now := <-t.C:
			limit := now.Add(-s.cfg.writeTimeout).UnixNano()
			s.mu.Lock()
			for c := range s.conns {
				if since := c.writingSince.Load(); since != 0 && since <= limit {
					c.close(reasonWriteTimeout)
				}
			}
			s.mu.Unlock()
		}
	}
}

// noteIdle closes idle once Shutdown has begun and no admitted connection is
// left. s.mu must be held.
func (s *server) noteIdle() {
	if len(s.conns) > 0 || !s.shuttingDown() {
		return
	}
	select {
	case <-s.idle:
	default:
		close(s.idle)
	}
}

// acceptLoop accepts until the listener fails for good, backing off on
// temporary errors such as EMFILE.
func (s *server) acceptLoop(ln net.Listener) error {
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.shuttingDown() || errors.Is(err, net.ErrClosed) {
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
		if err := setKeepAlive(conn, s.cfg.keepalive); err != nil {
			s.log.Debug().Err(err).Str("remote", conn.RemoteAddr().String()).Msg("keepalive not set")
		}
		if c := s.admit(conn); c != nil {
			// Shutdown waits for serving before it waits for wg, so
			// this Add never races with that Wait.
			s.wg.Add(1)
			go s.handle(c) // returns when c's loops have ended and c is released
		}
	}
}

// admit registers conn as a client, or refuses it with one notice line (none
// under TLS) before any goroutine starts for it: when --allow, --deny or
// --max-clients-per-ip refuse its address (see gate), or the server is over
// --max-clients.
func (s *server) admit(conn net.Conn) *client {
	ip := remoteIP(conn)
	s.mu.Lock()
	r, notice := s.gate(ip)
	var c *client
	if r == reasonNone {
		c = newClient(s.nextID.Add(1), s.cfg.tls.wrap(conn), s.hub, s.log)
		s.conns[c] = struct{}{}
		s.countIP(ip, +1)
	}
	s.mu.Unlock()
	if r != reasonNone {
		s.refuse(conn, r, notice)
	}
	return c
}

// handle runs one client: after the TLS handshake, if any, it registers c
// with the hub, starts its writer and reads until the connection ends. It
// returns when both loops have returned and the connection is closed.
func (s *server) handle(c *client) {
	defer s.wg.Done()
	c.log.Debug().Msg("client connected")
	if s.handshake(c) && s.hub.register(c) {
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
	s.release(c)
}

// release forgets the closed client c, counts and logs its close, and frees
// what the WebSocket library holds for a WebSocket client. It is not
// part of handle so that handle's frame, at the bottom of every parked
// reader's stack, stays small: a reader whose stack outgrows 2 KiB keeps
// 4 KiB for good (docs/design.md, the idle cost).
func (s *server) release(c *client) {
	s.mu.Lock()
	delete(s.conns, c)
	s.countIP(remoteIP(c.conn), -1)
	s.noteIdle()
	s.mu.Unlock()

	r := c.closeReason()
	s.closed.add(c.closedInfo(r, time.Now())) // before the count: who sees the count finds the row
	s.m.closes[r].Add(1)
	c.log.WithLevel(r.level()).Str("reason", r.String()).Dur("dur", time.Since(c.connectedAt)).
		Uint64("msgs_in", c.msgsIn.Load()).Uint64("msgs_out", c.msgsOut.Load()).
		Uint64("bytes_in", c.bytesIn.Load()).Uint64("bytes_out", c.bytesOut.Load()).
		Uint64("dropped", c.dropped.Load()).Msg("client closed")
	if wc, ok := c.conn.(*wsConn); ok {
		wc.release(s.m)
	}
}

// Shutdown stops the server gracefully:
//  1. close the listener, and the web listener if any (stopAccepting), so no
//     client is admitted any more;
//  2. tell the hub to finish (hub.shutdown), and set every connection's read
//     deadline to now, so readers stop after handing the hub every complete
//     message they have read;
//  3. once every reader has left (with --backplane: and the backplane has
//     published what they read and delivered it back), the hub closes every
//     send channel, so writers flush their queues and close their connections;
//  4. wait for that until ctx is done, and
//  5. then force-close whatever is left.
//
// It returns ctx's error if it had to force-close, and nil otherwise.
func (s *server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	select {
	case <-s.quit:
	default:
		close(s.quit)
	}
	ln, web := s.ln, s.web
	s.mu.Unlock()
	web.stopAccepting() // nil without --web-listen: does nothing

	if ln == nil { // Serve never ran, and now never starts anything
		s.hub.shutdown()
		if s.bp != nil {
			s.bp.discard()
		}
		return nil
	}
	ln.Close()
	<-s.serving // no admit runs after this, and no wg.Add
	s.hub.shutdown()
	now := time.Now()
	s.mu.Lock()
	for c := range s.conns {
		c.conn.SetReadDeadline(now)
	}
	s.noteIdle()
	s.mu.Unlock()

	allDone := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(allDone)
	}()
	var err error
	select {
	case <-allDone:
	case <-ctx.Done():
		err = ctx.Err()
		if s.bp != nil {
			s.bp.stopNow() // what it has not stored by now is lost; it logs how much
		}
		s.mu.Lock()
		for c := range s.conns {
			c.close(reasonShutdown)
		}
		s.mu.Unlock()
		<-allDone
	}
	s.log.Info().Err(err).Msg("shutdown complete")
	return err
}
