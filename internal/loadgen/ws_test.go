package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"
)

// wsHub is a minimal WebSocket broadcast hub for the bench tests, at /ws:
// every message from any connection goes to every connection, the sender
// included, as a message of the same type. It counts the messages that
// break the framing's rule: in line framing a text message without '\n',
// in len32 framing a binary message.
type wsHub struct {
	framing string
	srv     *httptest.Server

	mu    sync.Mutex // guards conns and serializes the writes to them
	conns map[*websocket.Conn]bool

	wrong atomic.Int64 // messages of the wrong type or with a '\n' in line framing
}

// startWSHub starts a wsHub on 127.0.0.1 and returns it. It stops in
// t.Cleanup.
func startWSHub(t *testing.T, framing string) *wsHub {
	t.Helper()
	h := &wsHub{framing: framing, conns: map[*websocket.Conn]bool{}}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serveWS)) // on 127.0.0.1
	t.Cleanup(func() {
		h.mu.Lock()
		for c := range h.conns {
			c.CloseNow()
		}
		h.mu.Unlock()
		h.srv.Close() // waits for every serveWS
	})
	return h
}

// addr returns the hub's HOST:PORT.
func (h *wsHub) addr() string { return strings.TrimPrefix(h.srv.URL, "http://") }

// serveWS is one connection. It returns when the connection fails or is
// closed.
func (h *wsHub) serveWS(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/ws" {
		http.NotFound(w, r)
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	h.mu.Lock()
	h.conns[c] = true
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.conns, c)
		h.mu.Unlock()
	}()
	for {
		typ, msg, err := c.Read(context.Background())
		if err != nil {
			return
		}
		if (h.framing == Line) != (typ == websocket.MessageText) || bytes.IndexByte(msg, '\n') >= 0 && h.framing == Line {
			h.wrong.Add(1)
		}
		h.mu.Lock()
		for o := range h.conns {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = o.Write(ctx, typ, msg)
			cancel()
		}
		h.mu.Unlock()
	}
}

// TestWS drives a WebSocket hub, with --ws or a ws:// address, in both
// framings: one WebSocket message per message, with the accounting of a TCP
// hub.
func TestWS(t *testing.T) {
	for _, tt := range []struct {
		name, framing string
		url           bool // ws://HOST:PORT/ws in --addr instead of --ws
	}{
		{"line", Line, false},
		{"len32", Len32, false},
		{"line url", Line, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := startWSHub(t, tt.framing)
			opts := testOptions(h.addr(), tt.framing)
			opts.WS = true
			if tt.url {
				opts.Addr, opts.WS = "ws://"+h.addr()+"/ws", false
			}
			res, out := shortRun(t, opts)
			if res.Target != kindWS || res.Published < 1000 || h.wrong.Load() != 0 {
				t.Errorf("Run against %s: target %q, %d published, %d messages framed wrongly; want ws, at least 1000, 0",
					h.addr(), res.Target, res.Published, h.wrong.Load())
			}
			if want := "target       " + opts.Addr + " (ws, " + tt.framing + ")"; !strings.Contains(out, want) {
				t.Errorf("table has no %q:\n%s", want, out)
			}
		})
	}
}

// TestWSLines: in line framing a WebSocket message with '\n' inside is
// several lines, and a message too long for --size is corrupt.
func TestWSLines(t *testing.T) {
	h := startWSHub(t, Line)
	r := newRun(Options{Subs: 1, Pubs: 1, Size: 64, Framing: Line})
	r.target = newWSTarget(Options{Framing: Line, Size: 64}, []string{"ws://" + h.addr() + "/ws"})
	defer r.target.close()
	sc, err := r.target.dialSub(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.close()
	pc, err := r.target.dialPub(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.close()
	go pc.readLoop() // returns when pc closes
	waitFor(t, 5*time.Second, func() error {
		h.mu.Lock()
		defer h.mu.Unlock()
		if len(h.conns) != 2 {
			return fmt.Errorf("the hub has %d connections; want 2", len(h.conns))
		}
		return nil
	})
	stop := time.AfterFunc(5*time.Second, func() { sc.close() }) // fails a receive that would hang
	defer stop.Stop()

	a, b := newFrame(Line, 64), newFrame(Line, 64)
	encode(a, header{pub: 0, seq: 0})
	encode(b, header{pub: 0, seq: 1})
	two := append(bytes.Clone(a[:63]), '\n')
	two = append(two, b...) // "a\nb\n": the '\n' after b is taken off by probe
	long := append(bytes.Repeat([]byte("M"), 80), '\n')
	for _, m := range [][]byte{two, long} {
		if err := pc.probe(m, m); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for len(got) < 3 {
		if err := sc.receive(func(p []byte, _ int64) { got = append(got, string(p)) }); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{string(a), string(b), string(long)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("received (-want +got):\n%s", diff)
	}
	r.subs = []*subscriber{{run: r, seqs: make([]sequence, 1), hist: hdrhistogram.NewPacked(1, maxLatency, 3)}}
	for _, p := range got {
		r.subs[0].handle([]byte(p), 0, 0, 1)
	}
	if s := r.subs[0]; s.received != 2 || s.corrupt != 1 {
		t.Errorf("handle counted %d received, %d corrupt; want 2, 1", s.received, s.corrupt)
	}
}
