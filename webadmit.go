package main

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strings"

	"github.com/coder/websocket"
)

// This file decides who may use the web listener (docs/web.md): the hub's
// admission rules (--allow, --deny, --max-clients, --max-clients-per-ip),
// applied to HTTP requests and WebSocket clients, and the origin check
// (--web-origin) that refuses cross-site WebSocket hijacking.

// admitted refuses every request from an address --allow and --deny refuse,
// with 403 and the TCP notice text, before any route: a refused address
// gets neither the page nor a WebSocket.
func (web *webServer) admitted(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ip := requestIP(r); !web.s.cfg.admits(ip) {
			web.s.m.closes[reasonDenied].Add(1)
			web.refused.Warn().Str("remote", r.RemoteAddr).Str("reason", reasonDenied.String()).
				Str("transport", "http").Msg("client refused")
			http.Error(w, fmt.Sprintf("echohub: not allowed from %s", ip), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
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
	if r, notice := s.gate(ip); r != reasonNone {
		return nil, r, websocket.StatusTryAgainLater, notice
	}
	c := newClient(s.nextID.Add(1), wc, s.hub, web.log)
	s.conns[c] = struct{}{}
	s.countIP(ip, +1)
	s.wg.Add(1) // for handle, which upgrade starts
	s.m.wsClients.Add(1)
	return c, reasonNone, 0, ""
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
