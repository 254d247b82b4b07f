package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

const (
	// httpReadHeaderTimeout bounds how long a connection to --metrics-listen
	// may take to send its request headers.
	httpReadHeaderTimeout = 5 * time.Second
	// httpShutdownTimeout bounds how long shutdown waits for requests in
	// flight, such as a scrape; a longer one (a CPU profile) is cut off.
	httpShutdownTimeout = time.Second
)

// An httpAPI is the HTTP server on --metrics-listen: /metrics, /healthz,
// /readyz, /clients and, with --pprof, /debug/pprof/. It reads the hub
// server's state and never changes it. listenHTTPAPI opens it, serve runs it
// and shutdown stops it; a nil *httpAPI (--metrics-listen empty) does nothing.
type httpAPI struct {
	// Immutable after listenHTTPAPI.
	s   *server
	ln  net.Listener // owned by srv once serve runs
	srv *http.Server
}

// listenHTTPAPI listens on s's --metrics-listen address and returns the API
// for s, not yet serving; it returns nil when --metrics-listen is empty. Its
// error names the flag.
func listenHTTPAPI(s *server) (*httpAPI, error) {
	if s.cfg.metricsListen == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", s.cfg.metricsListen)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen: %w", err)
	}
	a := &httpAPI{s: s, ln: ln}
	a.srv = &http.Server{
		Handler:           a.handler(),
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ErrorLog:          stdlog.New(warnWriter{s.log}, "", 0),
	}
	s.log.Info().Str("addr", ln.Addr().String()).Bool("pprof", s.cfg.pprof).Msg("metrics listening")
	return a, nil
}

// addr returns the address the API listens on.
func (a *httpAPI) addr() string { return a.ln.Addr().String() }

// handler returns the API's routes, on a mux of its own: the pprof handlers
// are registered here, and DefaultServeMux (where importing net/http/pprof
// also puts them) is never served.
func (a *httpAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(newRegistry(a.s), promhttp.HandlerOpts{
		ErrorLog: promLogger{a.s.log},
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.HandleFunc("GET /clients", a.clients)
	if a.s.cfg.pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// serve serves the API until shutdown. It is one of serve's errgroup
// goroutines and returns nil after shutdown, or the error that stopped it.
func (a *httpAPI) serve() error {
	if a == nil {
		return nil
	}
	if err := a.srv.Serve(a.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics server: %w", err)
	}
	return nil
}

// shutdown stops the API: it closes the listener, lets requests in flight
// finish for up to httpShutdownTimeout and then closes their connections.
// serve calls it after the hub server's Shutdown has returned, so that
// /readyz answers 503 all the while the hub drains.
func (a *httpAPI) shutdown() {
	if a == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
	defer cancel()
	if err := a.srv.Shutdown(ctx); err != nil {
		a.srv.Close()
	}
}

// readyz answers 200 while the server admits clients, and 503 before Serve
// and from the moment Shutdown begins, so a load balancer stops sending new
// clients while the hub drains; with --backplane, 503 too while the backplane
// is down (its clients stay connected, but wait).
func (a *httpAPI) readyz(w http.ResponseWriter, _ *http.Request) {
	if !a.s.accepting() {
		http.Error(w, "not accepting", http.StatusServiceUnavailable)
		return
	}
	if a.s.bp != nil && !a.s.bp.up.Load() {
		http.Error(w, "backplane down", http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ok\n")
}

// accepting reports whether s admits clients: Serve has begun, and neither
// Shutdown nor a failed accept loop has ended it.
func (s *server) accepting() bool {
	if s.shuttingDown() {
		return false
	}
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	if ln == nil {
		return false
	}
	select {
	case <-s.serving:
		return false
	default:
		return true
	}
}

// clientsPage is the body of /clients.
type clientsPage struct {
	Clients []clientInfo `json:"clients"` // connected, by id
	Closed  []clientInfo `json:"closed"`  // the last closedRingSize closed, newest first
}

// clients answers /clients: every connected client, and the last ones closed.
func (a *httpAPI) clients(w http.ResponseWriter, _ *http.Request) {
	s := a.s
	s.mu.Lock()
	page := clientsPage{Clients: make([]clientInfo, 0, len(s.conns))}
	for c := range s.conns {
		page.Clients = append(page.Clients, c.info())
	}
	s.mu.Unlock()
	slices.SortFunc(page.Clients, func(x, y clientInfo) int { return cmp.Compare(x.ID, y.ID) })
	page.Closed = s.closed.list()

	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(page) // an error here is the client's: it went away
}

// warnWriter logs what net/http's ErrorLog prints (a handler that panicked,
// accept retries) as warnings.
type warnWriter struct{ log zerolog.Logger }

func (w warnWriter) Write(p []byte) (int, error) {
	w.log.Warn().Str("error", strings.TrimSpace(string(p))).Msg("metrics server error")
	return len(p), nil
}

// promLogger logs errors gathering or writing metrics as warnings; it is
// promhttp's ErrorLog.
type promLogger struct{ log zerolog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Warn().Str("error", strings.TrimSpace(fmt.Sprintln(v...))).Msg("metrics scrape failed")
}
