package main

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestWebCrossTransport: in every framing, what a TCP client sends reaches
// WebSocket clients, and what a WebSocket client sends reaches TCP clients
// and the other WebSocket clients, mapped as docs/web.md says.
func TestWebCrossTransport(t *testing.T) {
	text, binary := websocket.MessageText, websocket.MessageBinary
	type step struct {
		fromTCP string // alice, over TCP, sends this
		fromWS  string // or bob, over WebSocket, sends this, as msgType
		msgType websocket.MessageType
		tcp     string                  // alice then reads exactly this
		ws      []string                // and bob and carol read these messages
		wsTypes []websocket.MessageType // of these types
	}
	for _, tc := range []struct {
		mode  framing
		steps []step
	}{
		{framingLine, []step{
			{fromTCP: "hello\n", tcp: "hello\n", ws: []string{"hello"}, wsTypes: []websocket.MessageType{text}},
			{fromTCP: "\xff\xfe\n", tcp: "\xff\xfe\n", ws: []string{"\xff\xfe"}, wsTypes: []websocket.MessageType{binary}},
			{fromWS: "from bob", msgType: text, tcp: "from bob\n", ws: []string{"from bob"}, wsTypes: []websocket.MessageType{text}},
			{fromWS: "ends in newline\n", msgType: text, tcp: "ends in newline\n", ws: []string{"ends in newline"}, wsTypes: []websocket.MessageType{text}},
			{fromWS: "a\nb\n\nc", msgType: binary, tcp: "a\nb\n\nc\n", ws: []string{"a", "b", "", "c"}, wsTypes: []websocket.MessageType{text, text, text, text}},
			{fromWS: "", msgType: text, tcp: "\n", ws: []string{""}, wsTypes: []websocket.MessageType{text}},
		}},
		{framingLen32, []step{
			{fromTCP: len32("abc") + len32(""), tcp: len32("abc") + len32(""), ws: []string{"abc", ""}, wsTypes: []websocket.MessageType{binary, binary}},
			{fromWS: "x\ny", msgType: binary, tcp: len32("x\ny"), ws: []string{"x\ny"}, wsTypes: []websocket.MessageType{binary}},
			{fromWS: "text too", msgType: text, tcp: len32("text too"), ws: []string{"text too"}, wsTypes: []websocket.MessageType{binary}},
		}},
		{framingRaw, []step{
			{fromTCP: "chunk", tcp: "chunk", ws: []string{"chunk"}, wsTypes: []websocket.MessageType{binary}},
			{fromWS: "ws chunk\n", msgType: binary, tcp: "ws chunk\n", ws: []string{"ws chunk\n"}, wsTypes: []websocket.MessageType{binary}},
		}},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			cfg := testWebConfig()
			cfg.framing = tc.mode
			ts, url := startWeb(t, cfg)
			alice := dial(t, ts.addr, "alice")
			bob, carol := dialWS(t, url, "bob", nil), dialWS(t, url, "carol", nil)
			ts.waitClients(t, 3)
			for _, st := range tc.steps {
				if st.fromWS != "" || st.fromTCP == "" {
					bob.sendWS(t, st.msgType, st.fromWS)
				} else {
					alice.send(t, st.fromTCP)
				}
				if got := readN(t, alice, len(st.tcp)); got != st.tcp {
					t.Errorf("alice: read %q; want %q", got, st.tcp)
				}
				for _, c := range []*wsTestConn{bob, carol} {
					for i, want := range st.ws {
						expectWS(t, c, st.wsTypes[i], want)
					}
				}
			}
			expectNothing(t, alice, 50*time.Millisecond)
		})
	}
}

// TestWebOneOrder: TCP and WebSocket publishers interleaved reach every
// client, of either transport, in one order.
func TestWebOneOrder(t *testing.T) {
	ts, url := startWeb(t, testWebConfig())
	alice, bob := dial(t, ts.addr, "alice"), dial(t, ts.addr, "bob")
	carol, dave := dialWS(t, url, "carol", nil), dialWS(t, url, "dave", nil)
	ts.waitClients(t, 4)
	const n = 200
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			alice.send(t, fmt.Sprintf("alice %d\n", i))
		}
	}()
	for i := range n {
		carol.sendWS(t, websocket.MessageText, fmt.Sprintf("carol %d", i))
	}
	<-done
	var order []string
	for range 2 * n {
		order = append(order, strings.TrimSuffix(bob.readLine(t), "\n"))
	}
	for _, c := range []*wsTestConn{carol, dave} {
		for i, want := range order {
			if _, got, err := c.readWS(t); err != nil || got != want {
				t.Fatalf("%s: message %d: %q, %v; want %q as bob got it", c.name, i, got, err, want)
			}
		}
	}
	for i, want := range order {
		if got := strings.TrimSuffix(alice.readLine(t), "\n"); got != want {
			t.Fatalf("alice: line %d: %q; want %q as bob got it", i, got, want)
		}
	}
}

// TestWebExcludeSender: --exclude-sender applies to WebSocket senders too.
func TestWebExcludeSender(t *testing.T) {
	cfg := testWebConfig()
	cfg.excludeSender = true
	ts, url := startWeb(t, cfg)
	alice := dial(t, ts.addr, "alice")
	bob := dialWS(t, url, "bob", nil)
	ts.waitClients(t, 2)
	bob.sendWS(t, websocket.MessageText, "not for bob")
	expectLine(t, alice, "not for bob\n")
	alice.send(t, "for bob\n")
	expectWS(t, bob, websocket.MessageText, "for bob")
}

// TestWebMessageTooLong: a WebSocket message over --max-message (in line
// mode, counting the '\n' it becomes) closes its sender with status 1009 and
// the TCP notice text; the others go on.
func TestWebMessageTooLong(t *testing.T) {
	for _, tc := range []struct {
		mode     framing
		fits     string
		tooLong  string
		fitsTCP  string
		fitsType websocket.MessageType
	}{
		{framingLine, strings.Repeat("x", 15), strings.Repeat("x", 16), strings.Repeat("x", 15) + "\n", websocket.MessageText},
		{framingLen32, strings.Repeat("x", 16), strings.Repeat("x", 17), len32(strings.Repeat("x", 16)), websocket.MessageBinary},
		{framingRaw, strings.Repeat("x", 16), strings.Repeat("x", 17), strings.Repeat("x", 16), websocket.MessageBinary},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			cfg := testWebConfig()
			cfg.framing, cfg.maxMessage = tc.mode, 16
			ts, url := startWeb(t, cfg)
			alice := dial(t, ts.addr, "alice")
			bob, carol := dialWS(t, url, "bob", nil), dialWS(t, url, "carol", nil)
			ts.waitClients(t, 3)
			bob.sendWS(t, tc.fitsType, tc.fits)
			if got := readN(t, alice, len(tc.fitsTCP)); got != tc.fitsTCP {
				t.Fatalf("alice: read %q; want %q", got, tc.fitsTCP)
			}
			expectWS(t, carol, tc.fitsType, tc.fits)
			expectWS(t, bob, tc.fitsType, tc.fits)

			bob.sendWS(t, websocket.MessageText, tc.tooLong)
			expectWSClose(t, bob, websocket.StatusMessageTooBig, "echohub: message too long (max 16 bytes); closing")
			waitCloses(t, ts, reasonMessageTooLong, 1)
			ts.waitClients(t, 2)
			carol.sendWS(t, tc.fitsType, tc.fits)
			if got := readN(t, alice, len(tc.fitsTCP)); got != tc.fitsTCP {
				t.Fatalf("alice: read %q; want %q", got, tc.fitsTCP)
			}
			expectNothing(t, alice, 50*time.Millisecond)
		})
	}
}

// TestWebAbruptClose: a WebSocket client that goes without a close frame is
// closed as eof, and the others go on.
func TestWebAbruptClose(t *testing.T) {
	ts, url := startWeb(t, testWebConfig())
	alice := dial(t, ts.addr, "alice")
	bob, carol := dialWS(t, url, "bob", nil), dialWS(t, url, "carol", nil)
	ts.waitClients(t, 3)
	bob.sendWS(t, websocket.MessageText, "last words")
	expectWS(t, bob, websocket.MessageText, "last words") // so nothing is unread, and closing sends FIN, not RST
	bob.CloseNow()                                        // no close frame
	expectLine(t, alice, "last words\n")
	waitCloses(t, ts, reasonEOF, 1)
	ts.waitClients(t, 2)
	alice.send(t, "still here\n")
	expectWS(t, carol, websocket.MessageText, "last words")
	expectWS(t, carol, websocket.MessageText, "still here")
	if got := ts.m.wsClients.Load(); got != 1 {
		t.Errorf("websocket_clients = %d; want 1", got)
	}
}

// TestWebSlow follows the slow-client template with WebSocket clients: pub
// and alice (TCP) and bob (WebSocket) read everything, in order, while slow,
// a WebSocket client that never reads, is cut off (disconnect) or skipped
// for what it could not take (drop).
func TestWebSlow(t *testing.T) {
	for _, policy := range []slowPolicy{slowDisconnect, slowDrop} {
		t.Run(policy.String(), func(t *testing.T) {
			cfg := testWebConfig()
			cfg.slow = policy
			cfg.queue, cfg.maxPending = 64, 64<<10
			cfg.writeTimeout = time.Minute // so only the slow-client rule can act
			cfg.spillBuffer = 0            // the rule as it applies once the spill is full
			cfg.stallLimit = 2 * time.Second
			ts, url := startWeb(t, cfg)
			pub, alice := dial(t, ts.addr, "pub"), dial(t, ts.addr, "alice")
			bob := dialWS(t, url, "bob", nil)
			slow := frozenWS(t, url)
			ts.waitClients(t, 4)
			var sc *client
			// Tell slow from bob: bob sends one message.
			bob.sendWS(t, websocket.MessageText, "bob")
			for _, c := range []*testConn{pub, alice} {
				expectLine(t, c, "bob\n")
			}
			expectWS(t, bob, websocket.MessageText, "bob")
			ts.mu.Lock()
			for c := range ts.conns {
				if _, ok := c.conn.(*wsConn); ok && c.msgsIn.Load() == 0 {
					sc = c
				}
			}
			ts.mu.Unlock()

			const n = frozenFloodLines
			var wg sync.WaitGroup
			wg.Go(func() { publishLines(t, pub, n, frozenFloodSize) })
			wg.Go(func() { readAll(t, pub, "pub", n, frozenFloodSize) })
			wg.Go(func() { readAll(t, alice, "pub", n, frozenFloodSize) })
			wg.Go(func() { readAllWS(t, bob, "pub", n, frozenFloodSize) })
			wg.Wait()

			switch policy {
			case slowDisconnect:
				ts.waitClients(t, 3)
				waitCloses(t, ts, reasonSlowClient, 1)
				if !ts.logs.has(`"reason":"slow_client"`, `"transport":"ws"`, `"level":"warn"`) {
					t.Error("no warn log line for the slow WebSocket client")
				}
			case slowDrop:
				waitFor(t, 5*time.Second, func() error {
					if got := sc.msgsOut.Load() + uint64(sc.pendingMsgs.Load()) + sc.dropped.Load(); got != n+1 {
						return fmt.Errorf("slow: out+queued+dropped = %d; want %d", got, n+1)
					}
					return nil
				})
				dropped := sc.dropped.Load()
				if dropped == 0 {
					t.Fatalf("slow: dropped = 0; want some")
				}
				expectWS(t, slow, websocket.MessageText, "bob")
				prev := -1
				for range n - int(dropped) {
					_, msg, err := slow.readWS(t)
					var i int
					if _, serr := fmt.Sscanf(msg, "pub %d ", &i); err != nil || serr != nil || i <= prev {
						t.Fatalf("slow: %.20q, %v after line %d; want a later line", msg, err, prev)
					}
					prev = i
				}
				ts.waitClients(t, 4)
			}
		})
	}
}

// TestWebFrameSizes: messages at each boundary of the WebSocket length
// encoding (7, 16 and 64 bits) cross both ways intact.
func TestWebFrameSizes(t *testing.T) {
	cfg := testWebConfig()
	cfg.framing, cfg.maxMessage, cfg.maxPending = framingLen32, 1<<20, 8<<20
	ts, url := startWeb(t, cfg)
	alice := dial(t, ts.addr, "alice")
	bob := dialWS(t, url, "bob", nil)
	ts.waitClients(t, 2)
	for _, size := range []int{0, 125, 126, 65535, 65536, 300000} {
		payload := strings.Repeat(string(rune('a'+size%26)), size)
		alice.send(t, len32(payload))
		expectWS(t, bob, websocket.MessageBinary, payload)
		if got := readN(t, alice, len32Header+size); got != len32(payload) {
			t.Fatalf("alice: own %d-byte frame came back different", size)
		}
		bob.sendWS(t, websocket.MessageBinary, payload)
		if got := readN(t, alice, len32Header+size); got != len32(payload) {
			t.Fatalf("alice: bob's %d-byte message arrived different", size)
		}
		expectWS(t, bob, websocket.MessageBinary, payload)
	}
}

// TestWebEarlyFrame: a frame sent in the same packet as the upgrade request,
// before the response, is not lost when the connection is hijacked.
func TestWebEarlyFrame(t *testing.T) {
	ts, url := startWeb(t, testWebConfig())
	alice := dial(t, ts.addr, "alice")
	ts.waitClients(t, 1)
	host := strings.TrimSuffix(strings.TrimPrefix(url, "ws://"), "/ws")
	early := dial(t, host, "early")
	payload, mask := []byte("sent early"), [4]byte{1, 2, 3, 4}
	frame := append([]byte{0x81, 0x80 | byte(len(payload))}, mask[:]...) // a final, masked text frame
	for i, b := range payload {
		frame = append(frame, b^mask[i%4])
	}
	early.send(t, "GET /ws HTTP/1.1\r\nHost: "+host+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"+string(frame))
	if status := early.readLine(t); !strings.HasPrefix(status, "HTTP/1.1 101 ") {
		t.Fatalf("early: %q; want 101 Switching Protocols", status)
	}
	expectLine(t, alice, "sent early\n")
}

// TestWebWriteTimeout: a WebSocket client whose socket takes nothing for
// --write-timeout is closed as write_timeout, by the same watchdog as a TCP
// one, before its queue fills.
func TestWebWriteTimeout(t *testing.T) {
	cfg := testWebConfig()
	cfg.queue, cfg.maxPending = 1<<20, 1<<30 // the queue never fills
	cfg.writeTimeout = 300 * time.Millisecond
	ts, url := startWeb(t, cfg)
	pub := dial(t, ts.addr, "pub")
	slow := frozenWS(t, url)
	ts.waitClients(t, 2)

	var wg sync.WaitGroup
	wg.Go(func() { publishLines(t, pub, 4000, 256) }) // 1 MB, past slow's socket buffers
	wg.Go(func() { readAll(t, pub, "pub", 4000, 256) })
	wg.Wait()
	ts.waitClients(t, 1)
	waitCloses(t, ts, reasonWriteTimeout, 1)
	if got := ts.closes(reasonSlowClient); got != 0 {
		t.Errorf("closes{slow_client} = %d; want 0", got)
	}
	expectWS(t, slow, websocket.MessageText, strings.TrimSuffix(line("pub", 0, 256), "\n")) // what its socket took, then the end
}
