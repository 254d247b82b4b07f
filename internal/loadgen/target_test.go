package loadgen

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseAddr(t *testing.T) {
	tests := []struct {
		name  string
		addr  string
		ws    bool
		kind  string
		nodes []string
		err   string
	}{
		{"tcp", "127.0.0.1:7000", false, kindTCP, []string{"127.0.0.1:7000"}, ""},
		{"tcp nodes", "a:7000, b:7000,c:7000", false, kindTCP, []string{"a:7000", "b:7000", "c:7000"}, ""},
		{"ws flag", "a:8080,b:8080", true, kindWS, []string{"ws://a:8080/ws", "ws://b:8080/ws"}, ""},
		{"ws url", "wss://a:8443/stream", false, kindWS, []string{"wss://a:8443/stream"}, ""},
		{"ws flag and url", "ws://a:8080/ws", true, kindWS, []string{"ws://a:8080/ws"}, ""},
		{"redis", "redis://127.0.0.1:6379,rediss://h:6380/0", false, kindRedis, []string{"redis://127.0.0.1:6379", "rediss://h:6380/0"}, ""},
		{"nats", "nats://127.0.0.1:4222,tls://h:4222", false, kindNATS, []string{"nats://127.0.0.1:4222", "tls://h:4222"}, ""},
		{"no port", "localhost", false, "", nil, "--addr: address localhost: missing port in address"},
		{"empty node", "a:1,,b:2", false, "", nil, `--addr: empty address in "a:1,,b:2"`},
		{"mixed", "a:1,nats://b:2", false, "", nil, "--addr: mixes tcp and nats addresses"},
		{"unknown scheme", "http://a:1", false, "", nil, `--addr: unknown scheme "http" in "http://a:1" (want redis, rediss, nats, tls, ws, wss, or HOST:PORT for a TCP hub)`},
		{"no host", "nats://", false, "", nil, `--addr: no host in "nats://"`},
		{"ws flag and redis", "redis://a:1", true, "", nil, `--ws: needs HOST:PORT or ws:// addresses, got "redis://a:1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kind, nodes, err := parseAddr(tt.addr, tt.ws)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Errorf("parseAddr(%q, %v) = %v; want %q", tt.addr, tt.ws, err, tt.err)
				}
				return
			}
			if err != nil || kind != tt.kind {
				t.Fatalf("parseAddr(%q, %v) = %q, %v; want %q, nil", tt.addr, tt.ws, kind, err, tt.kind)
			}
			if diff := cmp.Diff(tt.nodes, nodes); diff != "" {
				t.Errorf("parseAddr(%q, %v) nodes (-want +got):\n%s", tt.addr, tt.ws, diff)
			}
		})
	}
}
