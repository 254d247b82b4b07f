package main

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// maxBackplaneReplicas is the most replicas JetStream allows for a stream.
const maxBackplaneReplicas = 5

// parseBackplaneURLs reads --backplane: comma-separated NATS server URLs,
// each with a scheme nats.go speaks (nats, tls, ws, wss) and a host. An empty
// string is no backplane.
func parseBackplaneURLs(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var urls []string
	for _, raw := range strings.Split(s, ",") {
		raw = strings.TrimSpace(raw)
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" || (u.Scheme != "nats" && u.Scheme != "tls" && u.Scheme != "ws" && u.Scheme != "wss") {
			return nil, fmt.Errorf("invalid URL %q (want nats://host:port, comma-separated)", raw)
		}
		urls = append(urls, raw)
	}
	return urls, nil
}

// validateBackplane checks the --backplane-* values that parsed on their own
// but are out of range.
func (cfg config) validateBackplane() error {
	if len(cfg.backplane) == 0 {
		return nil
	}
	maxFrame := cfg.framing.maxFrame(cfg.maxMessage)
	switch {
	case !validStreamName(cfg.bpStream):
		return fmt.Errorf("--backplane-stream: invalid name %q (want letters, digits, '-' or '_')", cfg.bpStream)
	case cfg.bpStorage != "memory" && cfg.bpStorage != "file":
		return fmt.Errorf("--backplane-storage: unknown value %q (want memory, file)", cfg.bpStorage)
	case cfg.bpReplicas < 1 || cfg.bpReplicas > maxBackplaneReplicas:
		return fmt.Errorf("--backplane-replicas: %d is out of range (1 to %d)", cfg.bpReplicas, maxBackplaneReplicas)
	case cfg.bpMaxAge < 0:
		return fmt.Errorf("--backplane-max-age: %v is out of range (want 0 for no limit, or more)", cfg.bpMaxAge)
	case cfg.bpMaxAge > 0 && cfg.bpMaxAge < bpDuplicateWindowMin:
		return fmt.Errorf("--backplane-max-age: %v is out of range (want 0 for no limit, or at least %v)", cfg.bpMaxAge, bpDuplicateWindowMin)
	case cfg.bpMaxBytes != 0 && cfg.bpMaxBytes < 2*maxFrame:
		return fmt.Errorf("--backplane-max-bytes: %d is less than two largest messages (%d bytes each, from --max-message)", cfg.bpMaxBytes, maxFrame)
	case cfg.bpBuffer < 1:
		return fmt.Errorf("--backplane-buffer: %d is out of range (want at least 1)", cfg.bpBuffer)
	case cfg.bpWindow < 1 || cfg.bpWindow > bpMaxWindow:
		return fmt.Errorf("--backplane-window: %d is out of range (1 to %d)", cfg.bpWindow, bpMaxWindow)
	}
	return nil
}

// validStreamName reports whether name is a JetStream stream name that is also
// a plain subject: letters, digits, '-' and '_'.
func validStreamName(name string) bool {
	if name == "" || len(name) > 255 {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// errNoJetStream reports a NATS server that runs without JetStream.
var errNoJetStream = errors.New("JetStream is not enabled on the NATS server (start nats-server with -js)")
