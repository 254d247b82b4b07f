package main

import (
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// consume hands the hub every message of the stream in stream order, from
// the one after the last it delivered, as readers do without a backplane.
// The hub's backpressure holds it, so a node whose clients are slow falls
// behind in the stream while its memory stays bounded by --backplane-buffer.
// A sequence that skips is a loss: the stream dropped those messages (its
// retention) before this node delivered them; it is counted and logged, and
// delivery goes on from the oldest message still there. It runs on its own
// goroutine, one per session, and returns when it is stopped or its
// connection fails (the iterator's error), or on abort.
func (b *backplane) consume(it jetstream.MessagesContext, progress chan<- struct{}) error {
	h := b.hub
	for {
		msg, err := it.Next()
		if err != nil {
			return err
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("metadata: %w", err)
		}
		seq, last := meta.Sequence.Stream, b.lastDelivered.Load()
		if seq <= last {
			continue // delivered on an earlier connection
		}
		b.seen(seq + meta.NumPending)
		if seq > last+1 {
			n := seq - last - 1
			b.lost.Add(n)
			b.log.Error().Uint64("lost", n).Uint64("from_seq", last+1).Uint64("to_seq", seq-1).
				Msg("backplane messages lost: this node fell further behind than the stream retains")
		}
		if m, ok := b.message(msg); ok {
			select {
			case h.publish <- m:
			case <-b.abort:
				return errBackplaneAborted
			}
		}
		b.lastDelivered.Store(seq)
		b.received.Add(1)
		b.advanced()
		select {
		case progress <- struct{}{}:
		default:
		}
	}
}

// message returns what the hub fans out for msg: its data, the number of
// framed messages in it and, with --exclude-sender, this node's client that
// sent it, if any. It reports false for a message the hub cannot queue: empty,
// or larger than --max-pending (a node with a larger --max-message); that one
// is counted as lost.
func (b *backplane) message(msg jetstream.Msg) (message, bool) {
	m := message{data: msg.Data(), count: 1}
	if len(m.data) == 0 {
		return m, false
	}
	if len(m.data) > b.cfg.maxPending {
		b.lost.Add(1)
		b.lossLog.Error().Int("bytes", len(m.data)).
			Msg("backplane message larger than --max-pending skipped; give every node the same --max-message")
		return m, false
	}
	hdr := msg.Headers()
	if n, err := strconv.Atoi(hdr.Get(hdrCount)); err == nil && n > 0 {
		m.count = n
	}
	if b.cfg.excludeSender && hdr.Get(hdrNode) == b.node {
		if id, err := strconv.ParseUint(hdr.Get(hdrClient), 10, 64); err == nil {
			m.from = b.sender(id)
		}
	}
	return m, true
}
