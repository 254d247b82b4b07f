package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// closeReason says why a client was closed. Its String is both the "reason"
// log field and the metric label; the first reason recorded wins.
type closeReason int32

const (
	reasonNone           closeReason = iota // not closed (yet)
	reasonEOF                               // peer closed its side
	reasonReadError                         // read failed (reset, ...)
	reasonWriteError                        // write failed (reset, broken pipe)
	reasonMessageTooLong                    // line/len32 payload over --max-message
	reasonSlowClient                        // fell behind the others with a full queue, --slow=disconnect
	reasonWriteTimeout                      // a write blocked longer than --write-timeout
	reasonServerFull                        // over --max-clients
	reasonDenied                            // refused by --allow or --deny
	reasonTooManyFromIP                     // over --max-clients-per-ip
	reasonShutdown                          // SIGINT/SIGTERM
	reasonTLSHandshake                      // TLS handshake failed or took over --handshake-timeout; logged at debug
	numCloseReasons
)

var reasonNames = [numCloseReasons]string{
	reasonNone: "none", reasonEOF: "eof", reasonReadError: "read_error", reasonWriteError: "write_error",
	reasonMessageTooLong: "message_too_long", reasonSlowClient: "slow_client",
	reasonWriteTimeout: "write_timeout", reasonServerFull: "server_full", reasonShutdown: "shutdown",
	reasonTLSHandshake: "tls_handshake", reasonDenied: "denied", reasonTooManyFromIP: "too_many_from_ip",
}

func (r closeReason) String() string { return reasonNames[r] }

// level is the log level of a close for this reason: warn when the client
// caused it, debug for the normal ways a connection ends. A failed TLS
// handshake is debug too: TCP health checks and scanners cause them all day.
func (r closeReason) level() zerolog.Level {
	switch r {
	case reasonMessageTooLong, reasonSlowClient, reasonWriteTimeout, reasonServerFull, reasonDenied, reasonTooManyFromIP:
		return zerolog.WarnLevel
	}
	return zerolog.DebugLevel
}

const (
	// sendBatches is the capacity of a client's send channel. The queue is
	// bounded by --queue and --max-pending; batches keep the channel short,
	// so an idle client's channel costs a few hundred bytes.
	sendBatches = 16
	// maxWriteVec and maxWriteBytes bound one write call, so that pending
	// counts fall (and a stalled hub wakes) while a large queue drains.
	maxWriteVec   = 64
	maxWriteBytes = 256 << 10
	// lingerTimeout bounds how long a closing connection that still has
	// unread input is drained after its last write (see finish).
	lingerTimeout = 500 * time.Millisecond
)

// A client is the server side of one TCP connection.
type client struct {
	// Immutable after newClient.
	id          uint64         // process-wide, increasing; "client_id" in logs
	conn        net.Conn       // the TCP connection, or its TLS wrapper (tls.go)
	hub         *hub           // the hub c is registered with
	log         zerolog.Logger // carries client_id and remote
	connectedAt time.Time      // when the accept loop admitted c
	send        chan *batch    // outbound queue; closed only by the hub
	writerDone  chan struct{}  // closed when writeLoop returns
	ingress     *ingress       // --rate: slows readLoop; nil when unlimited (limits.go)

	// Owned by the hub goroutine (hub.run).
	index   int    // position in hub.clients; -1 when not registered
	reading bool   // registered and readLoop has not left
	lagging bool   // --slow=drop: fell behind; skipped without waiting while its queue is half full
	ownMsgs int    // --exclude-sender: this client's messages in the batch being fanned out
	spilled bool   // the hub went on without c and keeps what it misses (spill.go)
	next    uint64 // spilled: the sequence of the next batch c needs from the spill
	spillAt int    // spilled: c's position in the spill's clients

	// Accessed atomically: the hub adds, writeLoop subtracts.
	pendingMsgs  atomic.Int64 // messages queued, bounded by --queue
	pendingBytes atomic.Int64 // bytes queued, bounded by --max-pending
	stalled      atomic.Bool  // set by the hub while it waits for room in this queue, or c is spilled
	writingSince atomic.Int64 // set by writeLoop: UnixNano when the write in progress began, 0 between writes; read by the hub and watchWrites

	// --backplane only: written by its publisher, read by settle.
	bpAcked atomic.Uint64 // messages read from c that JetStream has acknowledged
	bpSeq   atomic.Uint64 // stream sequence of the last of them

	// Statistics, each written by one goroutine and read by anyone.
	msgsIn, bytesIn   atomic.Uint64 // readLoop
	msgsOut, bytesOut atomic.Uint64 // writeLoop
	dropped           atomic.Uint64 // hub, --slow=drop

	reason    atomic.Int32 // first closeReason recorded, see setReason
	closeOnce sync.Once
}

// newClient returns the client for conn, not yet registered with the hub.
func newClient(id uint64, conn net.Conn, h *hub, log zerolog.Logger) *client {
	return &client{
		id:          id,
		conn:        conn,
		hub:         h,
		log:         log.With().Uint64("client_id", id).Str("remote", conn.RemoteAddr().String()).Logger(),
		connectedAt: time.Now(),
		send:        make(chan *batch, sendBatches),
		writerDone:  make(chan struct{}),
		ingress:     newIngress(h.cfg),
		index:       -1,
	}
}

// setReason records r as the reason c closes, unless one was recorded before.
func (c *client) setReason(r closeReason) {
	c.reason.CompareAndSwap(int32(reasonNone), int32(r))
}

// closeReason returns the reason recorded by setReason.
func (c *client) closeReason() closeReason { return closeReason(c.reason.Load()) }

// close records r and closes the connection, which ends both loops: a blocked
// read or write fails at once. It is safe to call more than once.
func (c *client) close(r closeReason) {
	c.setReason(r)
	c.closeOnce.Do(func() {
		c.ingress.stop()
		c.conn.Close()
	})
}

// A messageReader cuts a connection's input into messages for readLoop: a
// framer over TCP (framing.go), a wsReader over WebSocket (webconn.go).
type messageReader interface {
	// next returns the next run of complete framed messages, in a new
	// slice that the caller owns, and their count.
	next() ([]byte, int, error)
	// partial reports how many bytes of an incomplete message are held.
	partial() int
}

// A frameEncoder is a connection with a wire format of its own, such as a
// WebSocket connection (webconn.go): flush encodes each run of complete framed
// messages with encode and writes the result to wire in one call. flush makes
// both calls itself, so that a write goes no deeper into the writer's stack
// than a TCP client's: one level more would grow every WebSocket writer's
// stack to 4 KiB for good after its first message (docs/web.md, idle cost).
type frameEncoder interface {
	encode(dst []byte, vec net.Buffers) []byte // appends vec, encoded, to dst
	wire() net.Conn                            // where encoded bytes are written
}

// readLoop reads messages and hands them to the hub until the connection
// ends. It returns why it stopped.
func (c *client) readLoop() closeReason {
	h := c.hub
	var f messageReader
	if wc, ok := c.conn.(*wsConn); ok {
		f = wc.reader(c.ingress.maxBatch(h.maxBatchMsgs)) // one WebSocket message at a time (webconn.go)
	} else {
		f = newFramer(c.conn, h.cfg.framing, h.cfg.maxMessage, c.ingress.maxBatch(h.maxBatchMsgs))
	}
	for {
		data, n, err := f.next()
		if err != nil {
			return c.readFailed(err, f.partial())
		}
		c.msgsIn.Add(uint64(n))
		c.bytesIn.Add(uint64(len(data)))
		h.m.messagesReceived.Add(uint64(n))
		h.m.bytesReceived.Add(uint64(len(data)))
		if c.ingress != nil {
			c.throttle(n) // --rate: TCP pushes back on this client alone (docs/operations.md)
		}
		// This blocks while the hub is stalled on full queues: the reader
		// stops reading and TCP pushes back on the publisher (README).
		// With --backplane, intake is the backplane's: this blocks while its
		// window is full or NATS is down, with the same effect.
		select {
		case h.intake <- message{from: c, data: data, count: n}:
		case <-h.intakeDone:
			return reasonShutdown
		}
	}
}

// readFailed maps the error that ended readLoop to a close reason.
func (c *client) readFailed(err error, partial int) closeReason {
	switch {
	case errors.Is(err, io.EOF):
		if partial > 0 {
			c.log.Debug().Int("bytes", partial).Msg("partial message discarded at eof")
		}
		return reasonEOF
	case errors.Is(err, errMessageTooLong):
		return reasonMessageTooLong
	case c.hub.closing() && errors.Is(err, os.ErrDeadlineExceeded):
		return reasonShutdown
	}
	if r := c.closeReason(); r != reasonNone {
		return r // closed by the hub or the writer; that is the reason
	}
	c.log.Debug().Err(err).Msg("read failed")
	return reasonReadError
}

// outbuf is a writer's scratch: the messages of one write call.
type outbuf struct {
	vec   net.Buffers
	write net.Buffers // what WriteTo consumes: a copy of vec that lives in the pooled outbuf, so it costs no allocation
	msgs  int
	bytes int
	held  int // bytes of c's own messages skipped under --exclude-sender: queued and counted, never written

	frames []byte // a frameEncoder's encoding of vec; pooled with the rest, so an idle client holds none
}

// outbufs keeps writers' scratch between wake-ups, so an idle client holds none.
var outbufs = sync.Pool{New: func() any { return &outbuf{vec: make(net.Buffers, 0, maxWriteVec)} }}

// writeLoop drains the send queue to the socket until the hub closes send.
// After a failed write it keeps receiving, and discards, so that the hub never
// waits on a dead client; then it closes the connection.
func (c *client) writeLoop() {
	defer close(c.writerDone)
	for b := range c.send {
		if err := c.write(b); err != nil {
			c.close(c.writeReason(err))
			c.log.Debug().Err(err).Msg("write failed")
			for b := range c.send {
				c.dequeue(c.share(b.msgs))
			}
			return
		}
	}
	c.finish()
}

// write writes batch b and every batch queued behind it, in write calls of
// at most maxWriteVec slices and about maxWriteBytes.
func (c *client) write(b *batch) error {
	w := outbufs.Get().(*outbuf)
	defer outbufs.Put(w)
	exclude := c.hub.cfg.excludeSender
	for {
		for i, m := range b.msgs {
			if exclude && m.from == c {
				w.held += len(m.data)
				continue
			}
			w.vec = append(w.vec, m.data)
			w.msgs += m.count
			w.bytes += len(m.data)
			if len(w.vec) == maxWriteVec || w.bytes >= maxWriteBytes {
				if err := c.flush(w); err != nil {
					c.dequeue(c.share(b.msgs[i+1:])) // never to be written
					return err
				}
			}
		}
		select {
		case next, ok := <-c.send:
			if ok {
				b = next
				continue
			}
			// Closed: flush, and the caller's range loop sees the close.
		default:
		}
		return c.flush(w)
	}
}

// flush writes w's messages in one write call and takes them off the queue.
func (c *client) flush(w *outbuf) error {
	if len(w.vec) == 0 {
		c.dequeue(0, w.held)
		w.held = 0
		return nil
	}
	// No SetWriteDeadline here: the server's watchWrites closes a client
	// whose write has been in progress for --write-timeout. Arming a
	// deadline per write costs a timer update, and its call chain grows
	// every writer's stack from 2 KiB to 4 KiB for good (docs/design.md, the idle cost).
	c.writingSince.Store(time.Now().UnixNano())
	var err error
	if fe, ok := c.conn.(frameEncoder); ok {
		w.frames = fe.encode(w.frames[:0], w.vec)
		_, err = fe.wire().Write(w.frames)
		if cap(w.frames) > 2*maxWriteBytes {
			w.frames = nil // keep no buffer a huge message grew
		}
	} else if len(w.vec) == 1 {
		_, err = c.conn.Write(w.vec[0])
	} else {
		w.write = w.vec // WriteTo consumes its receiver; a local copy would escape to the heap
		_, err = w.write.WriteTo(c.conn)
	}
	c.writingSince.Store(0)
	if err == nil {
		c.msgsOut.Add(uint64(w.msgs))
		c.bytesOut.Add(uint64(w.bytes))
		c.hub.m.messagesDelivered.Add(uint64(w.msgs))
		c.hub.m.bytesDelivered.Add(uint64(w.bytes))
	}
	c.dequeue(w.msgs, w.bytes+w.held)
	clear(w.vec) // drop references, so written messages can be freed
	w.vec, w.msgs, w.bytes, w.held = w.vec[:0], 0, 0, 0
	return err
}

// dequeue takes n messages of size bytes off c's pending counts. It wakes the
// hub if it is waiting for room in c's queue, or if c's queue is now empty and
// the hub holds messages until the writers are done (hub.take).
func (c *client) dequeue(n, size int) {
	if n == 0 && size == 0 {
		return
	}
	h := c.hub
	c.pendingBytes.Add(-int64(size))
	if n > 0 && c.pendingMsgs.Add(-int64(n)) == 0 && h.busy.Add(-1) <= h.settled.Load() && h.holding.Load() {
		wake(h.ready)
	}
	if c.stalled.Load() {
		wake(h.room)
	}
}

// wake wakes whoever waits on ch, a channel of capacity 1, without blocking.
func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// share returns how many of msgs are for c, and the bytes of all of them:
// the hub queued exactly these for c, and counted them so (hub.fanout).
func (c *client) share(msgs []message) (n, size int) {
	for _, m := range msgs {
		size += len(m.data)
		if !c.hub.cfg.excludeSender || m.from != c {
			n += m.count
		}
	}
	return n, size
}

// writeReason maps a failed write to a close reason. A WebSocket peer that
// sent a close frame has been answered by the library at once, queue or not,
// and may then close the connection under a write: it left as it said it
// would (eof), whichever of the writer and the reader notices first.
func (c *client) writeReason(err error) closeReason {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return reasonWriteTimeout
	}
	if wc, ok := c.conn.(*wsConn); ok && wc.closeSent.Load() {
		return reasonEOF
	}
	return reasonWriteError
}

// finish ends a connection whose queue has been written out. A client closed
// for an over-long message first gets one notice. Unless the peer has already
// closed its side, the server sends FIN and discards input for a moment
// before closing, as net/http does: closing a socket with unread input sends
// RST, and the peer could lose the tail of what it was sent. A WebSocket
// client gets a close frame instead, with the notice as its text.
func (c *client) finish() {
	cfg := &c.hub.cfg
	r := c.closeReason()
	if wc, ok := c.conn.(*wsConn); ok {
		wc.finish(r, cfg.maxMessage)
		return
	}
	if r == reasonEOF {
		return
	}
	deadline := time.Now().Add(lingerTimeout)
	if r == reasonMessageTooLong {
		c.conn.SetWriteDeadline(deadline)
		notice := messageTooLongNotice(cfg.maxMessage)
		if _, err := c.conn.Write(cfg.framing.encodeNotice(notice)); err != nil {
			return
		}
	}
	if cw, ok := c.conn.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		c.conn.SetReadDeadline(deadline)
		io.Copy(io.Discard, io.LimitReader(c.conn, int64(cfg.maxPending)))
	}
}

// messageTooLongNotice is the notice a client closed for an over-long message
// gets: a last line over TCP, the close frame's text over WebSocket.
func messageTooLongNotice(maxMessage int) string {
	return fmt.Sprintf("echohub: message too long (max %d bytes); closing", maxMessage)
}
