package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// httpShutdownTimeout bounds how long shutdown waits for requests in flight,
// such as a scrape; a longer one (a CPU profile) is cut off.
const httpShutdownTimeout = time.Second

// apiLimits bound the connections of the HTTP API, so that the admin port
// cannot hurt the hub: no request, answered or not, holds a connection,
// memory or a file descriptor for long (docs/metrics.md). They have no
// flags; tests shrink them.
type apiLimits struct {
	readHeaderTimeout time.Duration // a request's headers must arrive within this
	readTimeout       time.Duration // and the whole request within this
	writeTimeout      time.Duration // an answer must be written within this of its request; a peer that does not read is cut off
	idleTimeout       time.Duration // a keep-alive connection with no new request for this long is closed
	maxHeaderBytes    int           // request headers (net/http allows 4 KiB more)
	maxConns          int           // connections open at once; past it, new ones wait in the kernel's accept queue
}

// defaultAPILimits returns the documented limits of the HTTP API (docs/metrics.md).
// 32 connections are plenty for a few scrapers, health checks and
// a person with curl, and are counted against RLIMIT_NOFILE (see
// fitFileLimit). The 30 s idle timeout keeps a scraper's connection across
// 15 s scrapes.
func defaultAPILimits() apiLimits {
	return apiLimits{
		readHeaderTimeout: 5 * time.Second,
		readTimeout:       10 * time.Second,
		writeTimeout:      10 * time.Second,
		idleTimeout:       30 * time.Second,
		maxHeaderBytes:    4 << 10,
		maxConns:          32,
	}
}

// maxProfile bounds ?seconds= of /debug/pprof/profile and /trace, which are
// written under a deadline of their own rather than the API's write timeout.
const maxProfile = 5 * time.Minute

// An httpAPI is the HTTP server on --metrics-listen: /metrics, /healthz,
// /readyz, /clients and, with --pprof, /debug/pprof/. It reads the hub
// server's state and never changes it. listenHTTPAPI opens it, serve runs it
// and shutdown stops it; a nil *httpAPI (--metrics-listen empty) does nothing.
type httpAPI struct {
	// Immutable after listenHTTPAPI.
	s   *server
	ln  net.Listener // a limitListener; owned by srv once serve runs
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
	lim := s.cfg.api
	a := &httpAPI{s: s, ln: newLimitListener(ln, lim.maxConns, s.cfg.sendBuffer, s.m)}
	a.srv = &http.Server{
		Handler:           a.handler(),
		ReadHeaderTimeout: lim.readHeaderTimeout,
		ReadTimeout:       lim.readTimeout,
		WriteTimeout:      lim.writeTimeout,
		IdleTimeout:       lim.idleTimeout,
		MaxHeaderBytes:    lim.maxHeaderBytes,
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
		mux.HandleFunc("/debug/pprof/profile", a.longRequest(pprof.Profile, 30*time.Second))
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", a.longRequest(pprof.Trace, time.Second))
	}
	return mux
}

// serve serves the API until shutdown. It is one of serve's errgroup
// goroutines and returns nil after shutdown, or the error that stopped it.
func (a *httpAPI) serve() error {
	if a == nil {
		return nil
	}
	return serveHTTP(a.srv, a.ln, "metrics server")
}

// serveHTTP serves srv on ln until srv is shut down, and then returns nil; it
// returns another error, named for what, if serving stops for good before.
func serveHTTP(srv *http.Server, ln net.Listener, what string) error {
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s: %w", what, err)
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

// longRequest serves h, a pprof handler that takes ?seconds= (default def,
// at most maxProfile), under a write deadline of that long plus the API's
// write timeout. The server-wide write timeout would cut a 30 s CPU profile
// off, and pprof refuses a duration past it, so h is shown no server.
func (a *httpAPI) longRequest(h http.HandlerFunc, def time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		d := def
		if s := r.FormValue("seconds"); s != "" {
			sec, err := strconv.ParseFloat(s, 64)
			if err != nil || sec <= 0 || sec > maxProfile.Seconds() {
				http.Error(w, fmt.Sprintf("seconds: %q is out of range (more than 0, at most %.0f)", s, maxProfile.Seconds()),
					http.StatusBadRequest)
				return
			}
			d = time.Duration(sec * float64(time.Second))
		}
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d + a.s.cfg.api.writeTimeout))
		h(w, r.WithContext(context.WithValue(r.Context(), http.ServerContextKey, nil)))
	}
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
