package main

import (
	"sync"
	"time"
)

// closedRingSize is how many closed clients /clients lists (docs/operations.md, /clients).
const closedRingSize = 1000

// A clientInfo is one row of /clients: a client's statistics at one moment.
// Its fields are exported for encoding/json only.
type clientInfo struct {
	ID             uint64 `json:"id"`
	Remote         string `json:"remote,omitempty"` // only with --clients-show-addr
	Transport      string `json:"transport"`        // tcp, tls, ws or wss
	ConnectedAt    string `json:"connected_at"`     // RFC 3339, UTC, nanoseconds
	QueuedMessages int64  `json:"queued_messages"`
	QueuedBytes    int64  `json:"queued_bytes"`
	Dropped        uint64 `json:"dropped"`
	MessagesIn     uint64 `json:"messages_in"`
	BytesIn        uint64 `json:"bytes_in"`
	MessagesOut    uint64 `json:"messages_out"`
	BytesOut       uint64 `json:"bytes_out"`

	// Set for closed clients only.
	ClosedAt string `json:"closed_at,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// info returns c's row of /clients. It reads c's atomics, so any goroutine
// may call it.
func (c *client) info() clientInfo {
	return clientInfo{
		ID:             c.id,
		Remote:         c.conn.RemoteAddr().String(),
		Transport:      c.transport(),
		ConnectedAt:    formatTime(c.connectedAt),
		QueuedMessages: c.pendingMsgs.Load(),
		QueuedBytes:    c.pendingBytes.Load(),
		Dropped:        c.dropped.Load(),
		MessagesIn:     c.msgsIn.Load(),
		BytesIn:        c.bytesIn.Load(),
		MessagesOut:    c.msgsOut.Load(),
		BytesOut:       c.bytesOut.Load(),
	}
}

// transport names how c is connected, for /clients.
func (c *client) transport() string {
	switch conn := c.conn.(type) {
	case *wsConn:
		return conn.transport()
	case *tlsConn:
		return "tls"
	}
	return "tcp"
}

// closedInfo returns c's row among the closed clients: closed at t for r.
func (c *client) closedInfo(r closeReason, t time.Time) clientInfo {
	ci := c.info()
	ci.ClosedAt, ci.Reason = formatTime(t), r.String()
	return ci
}

// formatTime formats t for /clients.
func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// A closedRing keeps the rows of the last clients closed, so that "who was
// slow and why" still has an answer after they are gone (nats /connz keeps
// closed connections the same way). A close is not per message, so a mutex
// is fine here.
type closedRing struct {
	mu    sync.Mutex
	rows  []clientInfo // row seq (1, 2, ...) is at (seq-1) % cap; grows to cap, then wraps
	added uint64       // rows ever added: the seq of the newest
}

// newClosedRing returns a ring that keeps the last n closed clients.
func newClosedRing(n int) *closedRing {
	return &closedRing{rows: make([]clientInfo, 0, n)}
}

// add records ci, forgetting the oldest row if the ring is full.
func (r *closedRing) add(ci clientInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.added++
	if len(r.rows) < cap(r.rows) {
		r.rows = append(r.rows, ci)
		return
	}
	r.rows[(r.added-1)%uint64(cap(r.rows))] = ci
}

// list returns a copy of the rows, newest first.
func (r *closedRing) list() []clientInfo {
	rows, _ := r.page(nil, 0, cap(r.rows))
	return rows
}

// page appends to dst copies of at most n rows older than the cursor before,
// newest first, and returns it with the cursor of the next page: the seq of
// the last row returned. A cursor of 0 starts at the newest row. Paging by
// seq rather than by position stays right while closes add rows.
func (r *closedRing) page(dst []clientInfo, before uint64, n int) ([]clientInfo, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seq := r.added
	if before != 0 {
		seq = min(seq, before-1)
	}
	oldest := r.added - uint64(len(r.rows)) + 1
	next := before
	for ; seq >= oldest && seq > 0 && n > 0; seq, n = seq-1, n-1 {
		dst = append(dst, r.rows[(seq-1)%uint64(cap(r.rows))])
		next = seq
	}
	return dst, next
}

// holds reports whether the ring holds a row older than the cursor before.
func (r *closedRing) holds(before uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	oldest := r.added - uint64(len(r.rows)) + 1
	return len(r.rows) > 0 && (before == 0 || before > oldest)
}
