package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"
)

// This file is the web listener (--web-listen, docs/web.md): the live page at
// /, a small JSON of figures for it at /stats, and WebSocket clients at /ws,
// which join the same hub as TCP clients (the adapter is in webconn.go).

// pageHTML is the live page: one self-contained file, nothing fetched from
// elsewhere.
//
//go:embed web/index.html
var pageHTML []byte

// webIdleTimeout bounds how long an idle keep-alive connection to the web
// listener (one that loaded the page) stays open.
const webIdleTimeout = time.Minute

// A webServer is the HTTP server on --web-listen. Its WebSocket clients
// belong to the hub server s: admitted by its rules, registered in its
// connection set and wait group, and closed by its Shutdown. listenWeb opens
// it, serve runs it and shutdown stops it; a nil *webServer does nothing.
type webServer struct {
	// Immutable after listenWeb.
	s       *server
	ln      net.Listener // owned by srv once serve runs
	srv     *http.Server
	accept  *websocket.AcceptOptions
	csp     string         // Content-Security-Policy of the page
	log     zerolog.Logger // s.log with "transport": "ws" or "wss", shared by every WebSocket client
	done    chan struct{}  // closed by shutdown: the keepalive loop returns
	stopped sync.Once

	// upgrades counts /ws handlers that may still admit a client, and
	// keepalive pings in flight; http.Server.Shutdown does not wait for a
	// handler once it has hijacked its connection, so shutdown waits here.
	upgrades sync.WaitGroup
}

// connKey is the request context key of the connection a request came on.
type connKey struct{}

// listenWeb listens on s's --web-listen address and returns the web server
// for s, not yet serving; it returns nil when --web-listen is empty. With
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
		s:    s,
		ln:   &webListener{Listener: ln, cfg: &s.cfg},
		done: make(chan struct{}),
		// The library checks the Origin header too: same-origin pages, and
		// those matching --web-origin (see originAllowed).
		accept: &websocket.AcceptOptions{OriginPatterns: s.cfg.webOrigins},
		csp:    pageCSP(pageHTML),
	}
	transport := "ws"
	if s.cfg.tls != nil {
		transport = "wss"
	}
	web.log = s.log.With().Str("transport", transport).Logger() // one for all clients: each With costs half a KiB
	web.srv = &http.Server{
		Handler:           web.handler(),
		ReadHeaderTimeout: httpReadHeaderTimeout,
		IdleTimeout:       webIdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          stdlog.New(warnWriter{s.log}, "", 0),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
	}
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

// serve serves until shutdown, with the keepalive loop beside it. It is one
// of serve's errgroup goroutines and returns nil after shutdown, or the error
// that stopped it.
func (web *webServer) serve() error {
	if web == nil {
		return nil
	}
	if web.s.cfg.keepalive > 0 {
		web.upgrades.Add(1)
		go func() {
			defer web.upgrades.Done()
			web.keepalive() // returns when shutdown closes done
		}()
	}
	if err := web.srv.Serve(web.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("web server: %w", err)
	}
	return nil
}

// shutdown stops the web server: it closes the listener, lets page requests
// in flight finish for up to httpShutdownTimeout, and waits for upgrades in
// flight and keepalive pings. serve calls it after the hub server's Shutdown,
// which closes the WebSocket clients with the TCP ones; an upgrade meanwhile
// is refused with status 1001.
func (web *webServer) shutdown() {
	if web == nil {
		return
	}
	web.stopped.Do(func() { close(web.done) })
	ctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
	defer cancel()
	if err := web.srv.Shutdown(ctx); err != nil {
		web.srv.Close()
	}
	web.upgrades.Wait()
}

// admitted refuses every request from an address --allow and --deny refuse,
// with 403 and the TCP notice text, before any route: a refused address
// gets neither the page nor a WebSocket.
func (web *webServer) admitted(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ip := requestIP(r); !web.s.cfg.admits(ip) {
			web.s.m.closes[reasonDenied].Add(1)
			web.s.log.Warn().Str("remote", r.RemoteAddr).Str("reason", reasonDenied.String()).
				Str("transport", "http").Msg("client refused")
			http.Error(w, fmt.Sprintf("echohub: not allowed from %s", ip), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// page serves the live page.
func (web *webServer) page(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", web.csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	w.Write(pageHTML)
}

// webStats is the body of /stats: what the page shows beside the stream.
type webStats struct {
	Clients          int64  `json:"clients"`           // registered with the hub, all transports
	WebSocketClients int64  `json:"websocket_clients"` // of them, connected over WebSocket
	MessagesReceived uint64 `json:"messages_received"` // from all clients, since start
	Framing          string `json:"framing"`
	MaxMessage       int    `json:"max_message"`
}

// stats answers /stats. It is public, unlike --metrics-listen: counts only,
// no addresses.
func (web *webServer) stats(w http.ResponseWriter, _ *http.Request) {
	m := web.s.m
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(webStats{
		Clients:          m.clients.Load(),
		WebSocketClients: m.wsClients.Load(),
		MessagesReceived: m.messagesReceived.Load(),
		Framing:          web.s.cfg.framing.String(),
		MaxMessage:       web.s.cfg.maxMessage,
	})
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
		s.log.Warn().Str("remote", r.RemoteAddr).Str("origin", r.Header.Get("Origin")).Msg("websocket refused: origin not allowed")
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
	wc := newWSConn(ws, conn, raw, sb.br, &s.cfg)
	c, reason, code, notice := web.admit(wc)
	if c == nil {
		s.m.closes[reason].Add(1)
		s.log.WithLevel(reason.level()).Str("remote", r.RemoteAddr).Str("reason", reason.String()).
			Str("transport", wc.transport()).Msg("client refused")
		raw.SetDeadline(time.Now().Add(noticeTimeout))
		ws.Close(code, notice)
		return
	}
	go web.run(c, wc)
}

// admit registers wc as a client under s.mu, or returns why not, with the
// close status and text it is sent. It mirrors server.admit for TCP. It
// refuses every client unless Serve has started the hub and Shutdown has not
// begun: under s.mu, so that Shutdown, which closes quit under s.mu, sees
// every client admitted before, and its wait group count.
func (web *webServer) admit(wc *wsConn) (*client, closeReason, websocket.StatusCode, string) {
	s := web.s
	ip := remoteIP(wc)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil || s.shuttingDown() {
		return nil, reasonShutdown, websocket.StatusGoingAway, shutdownCloseText
	}
	r, notice := s.gate(ip)
	if r == reasonNone && s.cfg.maxClients > 0 && len(s.conns) >= s.cfg.maxClients {
		r, notice = reasonServerFull, fmt.Sprintf("echohub: server full (max %d clients); closing", s.cfg.maxClients)
	}
	if r != reasonNone {
		return nil, r, websocket.StatusTryAgainLater, notice
	}
	c := newClient(s.nextID.Add(1), wc, s.hub, web.log)
	s.conns[c] = struct{}{}
	s.countIP(ip, +1)
	s.wg.Add(2) // one for handle, one for run around it
	s.m.wsClients.Add(1)
	return c, reasonNone, 0, ""
}

// run runs the WebSocket client c with server.handle, as the accept loop
// runs a TCP one, then releases the library's state of its connection. It is
// the client's reader goroutine, counted in the server's wait group, and
// returns when both loops have returned and c is released.
func (web *webServer) run(c *client, wc *wsConn) {
	defer web.s.wg.Done()
	web.s.handle(c)  // calls wg.Done for itself
	wc.ws.CloseNow() // the TCP connection is closed already; this frees the rest
	web.s.m.wsClients.Add(-1)
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
		case <-web.done:
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
				go func() {
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
// client's reader handles. A client closed meanwhile ends the wait.
func (web *webServer) ping(c *client, wc *wsConn) {
	defer wc.pinging.Store(false)
	ctx, cancel := context.WithTimeout(wc.ctx, web.s.cfg.keepalive)
	defer cancel()
	if err := wc.ws.Ping(ctx); err != nil {
		if wc.ctx.Err() == nil {
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
	// connection. Data frames are written past the library (writeVec), and
	// a control frame is at most 127 bytes, so it still goes out in one
	// write call.
	wsReadBuffer  = 1 << 10
	wsWriteBuffer = 256
)

// smallBuffers hands the library a hijacked connection with smaller buffers
// than net/http's, so that an idle WebSocket client costs less (docs/web.md).
type smallBuffers struct {
	http.ResponseWriter
	br *bufio.Reader // set by Hijack: what the library reads frames from
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
	return conn, bufio.NewReadWriter(br, bufio.NewWriterSize(conn, wsWriteBuffer)), nil
}

// A webListener applies the accept-time settings of TCP clients (keepalive,
// send buffer) to connections on --web-listen, and wraps each for TLS when
// the hub serves it. net/http does the TLS handshake, within its header
// timeout.
type webListener struct {
	net.Listener
	cfg *config
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

// requestIP returns the address a request came from, as remoteIP does for a
// connection.
func requestIP(r *http.Request) netip.Addr {
	ap, _ := netip.ParseAddrPort(r.RemoteAddr)
	return ap.Addr().Unmap().WithZone("")
}

// originAllowed reports whether a page from r's Origin may open a WebSocket:
// when there is no Origin (not a browser), when it is the page's own origin
// (its host is the request's Host), or when it matches a --web-origin
// pattern, a path.Match pattern for the origin's host, or for scheme://host
// if the pattern has "://". This refuses cross-site WebSocket hijacking. The
// library applies the same rule again on Accept.
func originAllowed(r *http.Request, patterns []string) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, p := range patterns {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return true
		}
	}
	return false
}

// checkOriginPatterns checks the --web-origin patterns: path.Match syntax,
// not empty.
func checkOriginPatterns(patterns []string) error {
	for _, p := range patterns {
		if _, err := path.Match(p, ""); err != nil || strings.TrimSpace(p) == "" {
			return fmt.Errorf("--web-origin: invalid pattern %q (want a host pattern such as app.example.com, *.example.com or https://*.example.com)", p)
		}
	}
	return nil
}

// inlineBlocks finds the page's inline script and style, whose hashes the
// page's Content-Security-Policy allows and nothing else.
var inlineBlocks = regexp.MustCompile(`(?s)<(script|style)>(.*?)</(?:script|style)>`)

// pageCSP returns the Content-Security-Policy for page: its own inline
// script and style only (by hash), connections to its own origin only, no
// framing. A message shown as HTML by mistake could then still run nothing.
func pageCSP(page []byte) string {
	var scripts, styles []string
	for _, m := range inlineBlocks.FindAllSubmatch(page, -1) {
		sum := sha256.Sum256(m[2])
		h := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
		if string(m[1]) == "script" {
			scripts = append(scripts, h)
		} else {
			styles = append(styles, h)
		}
	}
	return "default-src 'none'; script-src " + strings.Join(scripts, " ") +
		"; style-src " + strings.Join(styles, " ") +
		"; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}
