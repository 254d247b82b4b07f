package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// This file adapts one WebSocket connection to the hub's client (client.go),
// so that a browser is a client like any other: same reader and writer
// goroutines, queues, limits, slow-client policy, close reasons and metrics.
// Only the edges differ: a wsReader turns each WebSocket message into framed
// messages for readLoop, encode turns the writer's framed messages back
// into WebSocket messages, and finish ends the connection with a close frame
// (docs/web.md has the mapping per framing).
//
// The library (github.com/coder/websocket) does the handshake, reads and
// unmasks every frame, answers pings, sends pings and close frames, and
// checks the protocol. The one thing the server does itself is encode the
// data frames it sends (appendFrame): a server's frame is a 2 to 10 byte
// header and the payload, unmasked and uncompressed, and encoding a batch
// into one buffer written with one system call costs a fan-out to many
// browsers about what it costs for TCP clients. The library's Write locks,
// frames and flushes each message on its own: five times the CPU per
// delivered message at 100 clients.

// shutdownCloseText is the reason of the close frame (status 1001, going
// away) that each WebSocket client gets at shutdown, after its queue.
const shutdownCloseText = "echohub: server shutting down"

// A wsConn is the server side of one WebSocket connection, presented to
// client.go as a net.Conn. Read and Write carry messages framed as over TCP
// (--framing); the readLoop reads through a wsReader instead, to keep each
// WebSocket message's boundaries.
type wsConn struct {
	// Immutable after newWSConn.
	ws        *websocket.Conn
	conn      net.Conn      // as accepted: a *tls.Conn over raw, or raw itself; the writer writes to it (wire)
	raw       net.Conn      // the TCP connection, closed by Close
	br        *bufio.Reader // the library reads frames through it; see readMessage
	closeSent *atomic.Bool  // the library has sent a close frame (closeWatch)
	secure    bool          // served over TLS (wss)
	mode      framing       // --framing
	max       int           // --max-message
	ctx       context.Context
	cancel    context.CancelFunc // ends keepalive pings; called by Close
	readOnce  sync.Once          // makes stream, for Read

	// Accessed atomically: the reader and web.ping store, the keepalive
	// loop reads.
	lastSeen atomic.Int64 // UnixNano when a message last arrived or a ping was answered
	pinging  atomic.Bool  // a keepalive ping is waiting for its pong

	closeOnce sync.Once // closes raw once

	// Owned by whoever calls Read (nothing in the server does).
	stream *wsReader
	rest   []byte
}

// newWSConn returns the adapter for ws, which was upgraded on conn.
func newWSConn(ws *websocket.Conn, conn, raw net.Conn, sb *smallBuffers, cfg *config) *wsConn {
	ctx, cancel := context.WithCancel(context.Background())
	w := &wsConn{ws: ws, conn: conn, raw: raw, br: sb.br, closeSent: &sb.closeSent, mode: cfg.framing, max: cfg.maxMessage, ctx: ctx, cancel: cancel}
	w.secure = conn != raw
	w.lastSeen.Store(time.Now().UnixNano())
	// One byte over --max-message is how an over-long message is noticed;
	// the library's own limit is a backstop that never fires first.
	ws.SetReadLimit(int64(cfg.maxMessage) + 2)
	return w
}

// transport names the client's transport in /clients and logs.
func (w *wsConn) transport() string {
	if w.secure {
		return "wss"
	}
	return "ws"
}

// Close closes the TCP connection at once, without a close frame, which ends
// any read or write in progress: the hub and the write watchdog close a
// client this way and must never wait on a peer. finish sends the close
// frame of a connection that ends normally.
func (w *wsConn) Close() error {
	var err error
	w.closeOnce.Do(func() {
		w.cancel()
		err = w.raw.Close()
	})
	return err
}

// release frees the library's state of a connection whose client has been
// released (server.release), and counts the client out.
func (w *wsConn) release(m *metrics) {
	w.ws.CloseNow() // the TCP connection is closed already; this frees the rest
	m.wsClients.Add(-1)
}

func (w *wsConn) LocalAddr() net.Addr                { return w.raw.LocalAddr() }
func (w *wsConn) RemoteAddr() net.Addr               { return w.raw.RemoteAddr() }
func (w *wsConn) SetDeadline(t time.Time) error      { return w.raw.SetDeadline(t) }
func (w *wsConn) SetReadDeadline(t time.Time) error  { return w.raw.SetReadDeadline(t) }
func (w *wsConn) SetWriteDeadline(t time.Time) error { return w.raw.SetWriteDeadline(t) }

// Read returns the next messages, framed as over TCP. The server reads
// through reader instead; Read makes wsConn a complete net.Conn.
func (w *wsConn) Read(p []byte) (int, error) {
	w.readOnce.Do(func() { w.stream = w.reader(1) })
	for len(w.rest) == 0 {
		data, _, err := w.stream.next()
		if err != nil {
			return 0, err
		}
		w.rest = data
	}
	n := copy(p, w.rest)
	w.rest = w.rest[n:]
	return n, nil
}

// Write writes p, complete messages framed as over TCP, as WebSocket
// messages, in one write call. The writer does the same with encode and wire.
func (w *wsConn) Write(p []byte) (int, error) {
	if _, err := w.conn.Write(w.encode(nil, net.Buffers{p})); err != nil {
		return 0, err
	}
	return len(p), nil
}

// encode appends vec, runs of complete messages framed as over TCP, to dst
// as one WebSocket message each (see appendFramed). client.flush writes the
// result for every batch in one call to wire; a blocked write is cut by the
// write watchdog, as over TCP. That write is never interleaved with the
// library's own frames (pongs, pings, close): a net.Conn and a *tls.Conn each
// write one call's bytes whole, and the library flushes each of its frames
// in one call.
func (w *wsConn) encode(dst []byte, vec net.Buffers) []byte {
	if dst == nil {
		dst = make([]byte, 0, frameBufSize) // once per pooled outbuf (client.go)
	}
	for _, data := range vec {
		dst = w.appendFramed(dst, data)
	}
	return dst
}

// frameBufSize is the first size of a writer's frame buffer: a batch of
// small messages fits in it without growing it.
const frameBufSize = 32 << 10

// wire returns the connection encode's output is written to: the accepted
// one, TLS included.
func (w *wsConn) wire() net.Conn { return w.conn }

// appendFramed appends data, complete messages framed by --framing, to b as
// WebSocket frames: line: each line without its '\n', as a text message when
// it is valid UTF-8 and a binary one otherwise; len32: each payload as a
// binary message; raw: data as one binary message.
func (w *wsConn) appendFramed(b, data []byte) []byte {
	switch w.mode {
	case framingLine:
		for len(data) > 0 {
			line := data
			if i := bytes.IndexByte(data, '\n'); i >= 0 {
				line, data = data[:i], data[i+1:]
			} else {
				data = nil
			}
			typ := websocket.MessageText
			if !utf8.Valid(line) {
				typ = websocket.MessageBinary
			}
			b = appendFrame(b, typ, line)
		}
	case framingLen32:
		for len(data) >= len32Header {
			size := min(int(binary.BigEndian.Uint32(data)), len(data)-len32Header) // the hub holds whole frames only
			b = appendFrame(b, websocket.MessageBinary, data[len32Header:len32Header+size])
			data = data[len32Header+size:]
		}
	case framingRaw:
		b = appendFrame(b, websocket.MessageBinary, data)
	}
	return b
}

// appendFrame appends to b one WebSocket data frame as a server sends it
// (RFC 6455, section 5.2): final, not masked, no extension bits (the server
// negotiates no compression), opcode 1 for text or 2 for binary, and the
// payload length in 7, 16 or 64 bits.
func appendFrame(b []byte, typ websocket.MessageType, payload []byte) []byte {
	b = append(b, 0x80|byte(typ)) // websocket.MessageText and MessageBinary are the opcodes
	switch n := len(payload); {
	case n <= 125:
		b = append(b, byte(n))
	case n <= 0xFFFF:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// finish ends a connection whose queue has been written out, in place of
// TCP's FIN: with a close frame whose status and text say why, as TCP's
// notice line does. It waits up to lingerTimeout for the peer's close frame.
// A peer that closed first has had its close frame answered by the library.
func (w *wsConn) finish(r closeReason, maxMessage int) {
	var code websocket.StatusCode
	var text string
	switch r {
	case reasonEOF, reasonReadError, reasonWriteError:
		return
	case reasonMessageTooLong:
		code, text = websocket.StatusMessageTooBig, messageTooLongNotice(maxMessage)
	case reasonShutdown:
		code, text = websocket.StatusGoingAway, shutdownCloseText
	default:
		code = websocket.StatusNormalClosure
	}
	w.raw.SetDeadline(time.Now().Add(lingerTimeout))
	w.ws.Close(code, text) // an error means the peer is gone: nothing left to tell it
}

// reader returns the reader of w's messages for readLoop, which hands the
// hub at most maxBatch messages at a time.
func (w *wsConn) reader(maxBatch int) *wsReader {
	return &wsReader{w: w, maxBatch: max(1, maxBatch)}
}

// A wsReader turns WebSocket messages into framed messages for readLoop:
// line: a message is one line, '\n' appended unless it ends with one, or
// several lines if it has '\n' inside; len32: a message is one frame's
// payload; raw: a message is one chunk (an empty one is skipped). A message
// over --max-message, or in line mode a line over it counting its '\n', ends
// the stream with errMessageTooLong.
type wsReader struct {
	w        *wsConn
	maxBatch int
	rest     []byte // line mode: lines of the last message not yet returned
}

// next returns the next run of 1 to maxBatch complete framed messages, in a
// new slice that the caller owns, and their count. A close frame from the
// peer is io.EOF.
func (r *wsReader) next() ([]byte, int, error) {
	// Wait for input here, in a small frame, rather than deep in the
	// library: an idle client's reader then parks on Go's smallest stack
	// (docs/web.md, idle cost). An error is left for the library to meet
	// again and report.
	if br := r.w.br; len(r.rest) == 0 && br != nil && br.Buffered() == 0 {
		br.Peek(1)
	}
	return r.cut()
}

// cut is next once input has come.
func (r *wsReader) cut() ([]byte, int, error) {
	for len(r.rest) == 0 {
		prefix := 0
		if r.w.mode == framingLen32 {
			prefix = len32Header
		}
		data, err := r.w.readMessage(prefix)
		if err != nil {
			return nil, 0, err
		}
		switch r.w.mode {
		case framingLen32:
			binary.BigEndian.PutUint32(data, uint32(len(data)-len32Header))
			return data, 1, nil
		case framingRaw:
			if len(data) > 0 {
				return data, 1, nil
			}
		case framingLine:
			if len(data) == 0 || data[len(data)-1] != '\n' {
				data = append(data, '\n') // readMessage left room: no copy
				lastLine := len(data) - (bytes.LastIndexByte(data[:len(data)-1], '\n') + 1)
				if lastLine > r.w.max {
					return nil, 0, errMessageTooLong // as over TCP, --max-message counts the '\n'
				}
			}
			r.rest = data
		}
	}
	end, n := 0, 0
	for n < r.maxBatch && end < len(r.rest) {
		end += bytes.IndexByte(r.rest[end:], '\n') + 1
		n++
	}
	data := r.rest[:end:end] // the caller may append without touching the rest
	r.rest = r.rest[end:]
	return data, n, nil
}

// partial reports how many bytes of an incomplete message are held: none,
// since a WebSocket message is read whole.
func (r *wsReader) partial() int { return 0 }

// readMessage reads the next data message whole into a new slice, after
// prefix zero bytes and with room for one more byte. It fails with
// errMessageTooLong, having read one byte over --max-message and no more.
func (w *wsConn) readMessage(prefix int) ([]byte, error) {
	_, mr, err := w.ws.Reader(context.Background()) // no deadline: keepalive finds dead peers
	if err != nil {
		return nil, wsReadError(err)
	}
	limit := prefix + w.max + 2 // the payload, one byte over, and room for a '\n'
	buf := make([]byte, prefix, min(limit, prefix+512))
	for {
		if len(buf)+1 >= cap(buf) { // keep room for a '\n' after what is read
			grown := make([]byte, len(buf), min(limit, 2*cap(buf)))
			copy(grown, buf)
			buf = grown
		}
		n, err := mr.Read(buf[len(buf) : cap(buf)-1])
		buf = buf[:len(buf)+n]
		if len(buf)-prefix > w.max {
			return nil, errMessageTooLong
		}
		if errors.Is(err, io.EOF) {
			w.lastSeen.Store(time.Now().UnixNano())
			return buf, nil
		}
		if err != nil {
			return nil, wsReadError(err)
		}
	}
}

// wsReadError maps the error of a WebSocket read to what readFailed expects:
// a close frame from the peer, whatever its status, is io.EOF; the rest
// (deadline, closed, reset) wrap the network error as they are.
func wsReadError(err error) error {
	if websocket.CloseStatus(err) != -1 {
		return io.EOF
	}
	return err
}
