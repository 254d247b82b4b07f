package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"
)

// This file is the web listener (--web-listen, docs/web.md): the live page at
// / and a small JSON of figures for it at /stats (webpage.go), and WebSocket
// clients at /ws, which join the same hub as TCP clients under the same
// admission rules (webadmit.go; the adapter is in webconn.go).

// The web listener faces the public, so no request holds a connection for
// long: its headers must come within webReadHeaderTimeout, the whole request
// within webRequestTimeout, and its answer be written within as long; an idle
// keep-alive connection (one that loaded the page) is closed after
// webIdleTimeout. net/http clears these deadlines when it hands a WebSocket
// connection over, and the hub's own rules take over.
const (
	webReadHeaderTimeout = 5 * time.Second
	webRequestTimeout    = 10 * time.Second
	webIdleTimeout       = time.Minute
	webMaxHeaderBytes    = 16 << 10 // browsers send cookies
)

// A webServer is the HTTP server on --web-listen. Its WebSocket clients
// belong to the hub server s: admitted by its rules, registered in its
// connection set and wait group, and closed by its Shutdown. listenWeb opens
// it, serve runs it and shutdown stops it; a nil *webServer does nothing.
type webServer struct {
	// Immutable after listenWeb.
	s       *server
	ln      *webListener // owned by srv once serve runs
	srv     *http.Server
	accept  *websocket.AcceptOptions
	csp     string         // Content-Security-Policy of the page
	log     zerolog.Logger // s.log with "transport": "ws" or "wss", shared by every WebSocket client
	refused zerolog.Logger // s.log, sampled: refusals come from many handlers at once, and a storm must not flood the log

	// Made by listenWeb; stopAccepting, step 1 of the hub server's Shutdown,
	// cancels stopping and begins net/http's shutdown.
	stopping context.Context    // the keepalive loop returns and pings in flight stop waiting once it is done
	stop     context.CancelFunc // cancels stopping
	stopOnce sync.Once
	httpDone chan struct{} // closed once net/http's shutdown, begun by stopAccepting, has returned

	// upgrades counts /ws handlers that may still admit a client, and
	// keepalive pings in flight; http.Server.Shutdown does not wait for a
	// handler once it has hijacked its connection, so shutdown waits here.
	upgrades sync.WaitGroup
}

// connKey is the request context key of the connection a request came on.
type connKey struct{}

// listenWeb listens on s's --web-listen address and returns the web server
// for s, not yet serving but with its keepalive loop started; it returns nil
// when --web-listen is empty. With
// --tls-cert it serves HTTPS and WSS with the hub's certificates, so a SIGHUP
// reload applies here too. Its error names the flag.
func listenWeb(s *server) (*webServer, error) {
	if s.cfg.webListen == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", s.cfg.webListen)
	if err != nil {
		return nil, fmt.Errorf("--web-listen: %w", err)
	}
	web := &webServer{
		s:        s,
		ln:       &webListener{Listener: ln, cfg: &s.cfg, closed: make(chan struct{})},
		httpDone: make(chan struct{}),
		// The library checks the Origin header too: same-origin pages, and
		// those matching --web-origin (see originAllowed).
		accept: &websocket.AcceptOptions{OriginPatterns: s.cfg.webOrigins},
		csp:    pageCSP(pageHTML),
	}
	web.stopping, web.stop = context.WithCancel(context.Background())
	transport := "ws"
	if s.cfg.tls != nil {
		transport = "wss"
	}
	web.log = s.log.With().Str("transport", transport).Logger() // one for all clients: each With costs half a KiB
	web.refused = s.log.Sample(&zerolog.BurstSampler{Burst: refusalBurst, Period: refusalPeriod})
	web.srv = &http.Server{
		Handler:           web.handler(),
		ReadHeaderTimeout: webReadHeaderTimeout,
		ReadTimeout:       webRequestTimeout,
		WriteTimeout:      webRequestTimeout,
		IdleTimeout:       webIdleTimeout,
		MaxHeaderBytes:    webMaxHeaderBytes,
		ErrorLog:          stdlog.New(warnWriter{s.log}, "", 0),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
	}
	if s.cfg.keepalive > 0 {
		// Started here rather than in serve, so that the Add always comes
		// before shutdown's Wait.
		web.upgrades.Add(1)
		go func() {
			defer web.upgrades.Done()
			web.keepalive() // returns when shutdown closes done
		}()
	}
	s.mu.Lock()
	s.web = web // Shutdown closes its listener with the TCP one
	s.mu.Unlock()
	s.log.Info().Str("addr", ln.Addr().String()).Bool("tls", s.cfg.tls != nil).Msg("web listening")
	return web, nil
}

// addr returns the address the web server listens on.
func (web *webServer) addr() string { return web.ln.Addr().String() }

// handler returns the web server's routes.
func (web *webServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", web.page)
	mux.HandleFunc("GET /ws", web.upgrade)
	mux.HandleFunc("GET /stats", web.stats)
	return web.admitted(mux)
}

// serve serves until shutdown. It is one of serve's errgroup goroutines and
// returns nil after shutdown, or the error that stopped it.
func (web *webServer) serve() error {
	if web == nil {
		return nil
	}
	return serveHTTP(web.srv, web.ln, "web server")
}

// stopAccepting is step 1 of the hub server's Shutdown for the web
// listener, as closing the TCP listener is for TCP clients: it returns once
// the listener is closed, so a new connection is refused from then on. It
// also stops the keepalive loop (a reader stopped by Shutdown can no longer
// take a pong, and a missing pong must not cut a client's drain short), and
// begins net/http's shutdown in the background: idle keep-alive connections
// are closed, and page requests in flight get up to httpShutdownTimeout. A
// handshake already under way is refused by admit with status 1001. It is
// safe to call more than once; a nil *webServer does nothing.
func (web *webServer) stopAccepting() {
	if web == nil {
		return
	}
	web.stopOnce.Do(func() {
		web.stop()
		go func() { // returns within httpShutdownTimeout; shutdown waits for it
			defer close(web.httpDone)
			ctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
			defer cancel()
			if err := web.srv.Shutdown(ctx); err != nil {
				web.srv.Close()
			}
			web.ln.Close() // if serve never ran, net/http had no listener to close
		}()
		<-web.ln.closed
	})
}

// shutdown finishes stopping the web server after the hub server's
// Shutdown, which closed its WebSocket clients with the TCP ones and began
// with stopAccepting: it waits for net/http's shutdown, for upgrades in
// flight and for keepalive pings.
func (web *webServer) shutdown() {
	if web == nil {
		return
	}
	web.stopAccepting() // already done, unless Shutdown never ran
	<-web.httpDone
	web.upgrades.Wait()
}

// upgrade answers /ws: it checks the origin, upgrades the connection and
// admits it as a client of the hub under the same rules as a TCP client
// (--max-clients, --max-clients-per-ip; --allow and --deny in admitted). A
// client over a limit is refused the way a browser can read: with a close
// frame carrying the TCP notice text.
func (web *webServer) upgrade(w http.ResponseWriter, r *http.Request) {
	web.upgrades.Add(1)
	defer web.upgrades.Done()
	s := web.s
	if !originAllowed(r, s.cfg.webOrigins) {
		s.m.wsBadOrigin.Add(1)
		web.refused.Warn().Str("remote", r.RemoteAddr).Str("origin", r.Header.Get("Origin")).Msg("websocket refused: origin not allowed")
		http.Error(w, "echohub: origin not allowed (see --web-origin)", http.StatusForbidden)
		return
	}
	conn, _ := r.Context().Value(connKey{}).(net.Conn)
	raw := rawConn(conn)
	if raw == nil {
		http.Error(w, "echohub: not a websocket connection", http.StatusInternalServerError)
		return
	}
	sb := &smallBuffers{ResponseWriter: w}
	ws, err := websocket.Accept(sb, r, web.accept) // on error it has answered the request
	if err != nil {
		s.log.Debug().Err(err).Str("remote", r.RemoteAddr).Msg("websocket handshake failed")
		return
	}
	s.m.wsUpgrades.Add(1)
	wc := newWSConn(ws, conn, raw, sb, &s.cfg)
	c, reason, code, notice := web.admit(wc)
	if c == nil {
		s.m.closes[reason].Add(1)
		web.refused.WithLevel(reason.level()).Str("remote", r.RemoteAddr).Str("reason", reason.String()).
			Str("transport", wc.transport()).Msg("client refused")
		raw.SetDeadline(time.Now().Add(noticeTimeout))
		ws.Close(code, notice)
		return
	}
	// The reader goroutine, as the accept loop starts one for a TCP client,
	// and with nothing above handle on its stack, which must stay within
	// 2 KiB while it waits (docs/web.md, idle cost). release ends the
	// library's side of the connection (wsConn.release).
	go s.handle(c) // returns when c's loops have ended and c is released
}

// keepalive pings every WebSocket client from which nothing has arrived for
// --keepalive, and closes one whose pong does not come within --keepalive
// more (reason read_error, as TCP keepalive does): so idle connections stay
// open through proxies, and dead peers free their slots. One loop for all
// clients keeps an idle client at two parked goroutines.
func (web *webServer) keepalive() {
	every := web.s.cfg.keepalive
	t := time.NewTicker(max(every/4, 10*time.Millisecond))
	defer t.Stop()
	var due []*client
	for {
		select {
		case <-web.stopping.Done():
			return
		case now := <-t.C:
			idle := now.Add(-every).UnixNano()
			web.s.mu.Lock()
			for c := range web.s.conns {
				if wc, ok := c.conn.(*wsConn); ok && wc.lastSeen.Load() <= idle && wc.pinging.CompareAndSwap(false, true) {
					due = append(due, c)
				}
			}
			web.s.mu.Unlock()
			for i, c := range due {
				web.upgrades.Add(1)
				go func() { // returns at the pong, after --keepalive, or when c closes
					defer web.upgrades.Done()
					web.ping(c, c.conn.(*wsConn))
				}()
				due[i] = nil
			}
			due = due[:0]
		}
	}
}

// ping sends wc a ping and waits up to --keepalive for the pong, which the
// client's reader handles. A client closed meanwhile ends the wait, and so
// does shutdown, which stops the readers: then the client is left to finish
// its drain.
func (web *webServer) ping(c *client, wc *wsConn) {
	defer wc.pinging.Store(false)
	ctx, cancel := context.WithTimeout(wc.ctx, web.s.cfg.keepalive)
	defer cancel()
	defer context.AfterFunc(web.stopping, cancel)()
	if err := wc.ws.Ping(ctx); err != nil {
		if wc.ctx.Err() == nil && web.stopping.Err() == nil {
			c.log.Debug().Err(err).Msg("no pong; closing")
			c.close(reasonReadError)
		}
		return
	}
	wc.lastSeen.Store(time.Now().UnixNano())
}

const (
	// wsReadBuffer and wsWriteBuffer size the buffers the library reads
	// frames through and writes its own frames (pings, pongs, close)
	// through; net/http's are 4 KiB each, kept for the life of every
	// connection. Data frames are written past the library (encode), and
	// a control frame is at most 127 bytes, so it still goes out in one
	// write call.
	wsReadBuffer  = 1 << 10
	wsWriteBuffer = 256
)

// smallBuffers hands the library a hijacked connection with smaller buffers
// than net/http's, so that an idle WebSocket client costs less (docs/web.md).
type smallBuffers struct {
	http.ResponseWriter
	br        *bufio.Reader // set by Hijack: what the library reads frames from
	closeSent atomic.Bool   // the library has sent a close frame (see closeWatch)
}

// A closeWatch is the connection the library writes its own frames to. It
// notes a close frame going out, which the library sends at once when the
// peer's arrives: from then on a failed write means that the peer left as it
// said it would (see client.writeReason). The library flushes each of its
// frames in one call, so a close frame starts a Write.
type closeWatch struct {
	net.Conn
	sent *atomic.Bool
}

func (c closeWatch) Write(p []byte) (int, error) {
	if len(p) > 0 && p[0] == 0x88 { // FIN and the close opcode; a server's frames are not masked
		c.sent.Store(true)
	}
	return c.Conn.Write(p)
}

// Hijack hijacks the connection, and carries over whatever net/http had
// read past the request into the new read buffer.
func (w *smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	var r io.Reader = conn
	size := wsReadBuffer
	early := brw.Reader.Buffered()
	if early > 0 {
		b, _ := brw.Reader.Peek(early)
		r = io.MultiReader(bytes.NewReader(bytes.Clone(b)), conn)
		size = max(size, early)
	}
	br := bufio.NewReaderSize(r, size)
	if early > 0 {
		br.Peek(early) // into br's buffer: the library keeps what is buffered, not r
	}
	w.br = br
	return conn, bufio.NewReadWriter(br, bufio.NewWriterSize(closeWatch{conn, &w.closeSent}, wsWriteBuffer)), nil
}

// A webListener applies the accept-time settings of TCP clients (keepalive,
// send buffer) to connections on --web-listen, and wraps each for TLS when
// the hub serves it. net/http does the TLS handshake, within its header
// timeout.
type webListener struct {
	net.Listener
	cfg *config

	closeOnce sync.Once
	closed    chan struct{} // closed by Close
}

// Close closes the listener; net/http and stopAccepting may both call it,
// and a second call does nothing.
func (l *webListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		err = l.Listener.Close()
		close(l.closed)
	})
	return err
}

func (l *webListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok && l.cfg.sendBuffer > 0 {
		tc.SetWriteBuffer(l.cfg.sendBuffer)
	}
	setKeepAlive(conn, l.cfg.keepalive) // best effort, as for TCP clients
	if l.cfg.tls != nil {
		return tls.Server(conn, l.cfg.tls.config), nil
	}
	return conn, nil
}

// rawConn returns the TCP connection under conn, a connection from
// webListener, or nil if it has none.
func rawConn(conn net.Conn) net.Conn {
	if tc, ok := conn.(*tls.Conn); ok {
		return tc.NetConn()
	}
	return conn
}
