package main

import (
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
)

// This file serves the live page of the web listener (docs/web.md): the page
// itself at /, and the figures it shows at /stats.

// pageHTML is the live page: one self-contained file, nothing fetched from
// elsewhere.
//
//go:embed web/index.html
var pageHTML []byte

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
