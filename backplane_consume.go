package main

import (
	"fmt"
	"strconv"
	"strings"

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
		for _, m := range b.messages(msg) {
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

// messages returns what the hub fans out for msg: each read in it, with the
// number of framed messages it holds and, with --exclude-sender, this node's
// client that sent it, if any. The reads share msg's data, read-only. It
// returns none for a message the hub cannot queue: empty, or a read larger
// than --max-pending (a node with a larger --max-message); that one is
// counted as lost.
func (b *backplane) messages(msg jetstream.Msg) []message {
	data, hdr := msg.Data(), msg.Headers()
	if len(data) == 0 {
		return nil
	}
	local := b.cfg.excludeSender && hdr.Get(hdrNode) == b.node
	parts := strings.Fields(hdr.Get(hdrParts))
	if len(parts) == 0 { // not from echohub: one message
		parts = []string{"0:" + strconv.Itoa(len(data)) + ":1"}
	}
	ms := make([]message, 0, len(parts))
	for _, p := range parts {
		var id uint64
		var size, count int
		f := strings.Split(p, ":")
		ok := len(f) == 3
		if ok {
			id, _ = strconv.ParseUint(f[0], 10, 64)
			size, _ = strconv.Atoi(f[1])
			count, _ = strconv.Atoi(f[2])
			ok = size > 0 && size <= len(data) && count > 0
		}
		if !ok || size > b.cfg.maxPending {
			b.lost.Add(1)
			b.lossLog.Error().Int("bytes", len(data)).Str("parts", hdr.Get(hdrParts)).
				Msg("backplane message skipped: malformed, or a read larger than --max-pending (give every node the same --max-message)")
			return nil
		}
		m := message{data: data[:size:size], count: count}
		if local {
			m.from = b.sender(id)
		}
		ms = append(ms, m)
		data = data[size:]
	}
	return ms
}
