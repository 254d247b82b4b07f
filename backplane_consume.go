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
	var ms []message // scratch, reused for every stream message
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
		ms = b.messages(msg, ms[:0])
		for i, m := range ms {
			ms[i] = message{} // the hub has its copy; ms keeps no data alive
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

// messages appends to ms what the hub fans out for msg, in order: the reads
// it carries, each with its number of framed messages and, with
// --exclude-sender, this node's client that sent it, if any. Neighbouring
// reads that the hub treats alike (from no client of this node, or from the
// same one) are joined into one message, within the bounds of one reader's
// read (b.maxFrame bytes, the hub's maxBatchMsgs messages), so that the hub
// takes a stream message in one send and fans it out once, however many
// reads it carries: the reads lie back to back in msg's data, which every
// message shares read-only. It returns ms unchanged for a message the hub
// cannot queue: empty, malformed, or with a read larger than --max-pending
// (a node with a larger --max-message); that one is counted as lost.
func (b *backplane) messages(msg jetstream.Msg, ms []message) []message {
	data, hdr := msg.Data(), msg.Headers()
	if len(data) == 0 {
		return ms
	}
	desc := hdr.Get(hdrParts)
	if desc == "" { // not from echohub: one message
		desc = "0:" + strconv.Itoa(len(data)) + ":1"
	}
	local := b.cfg.excludeSender && hdr.Get(hdrNode) == b.node
	first := len(ms)
	start, off := 0, 0 // the last message of ms is data[start:off]
	for p := range strings.FieldsSeq(desc) {
		id, size, count, ok := parsePart(p)
		if !ok || size > len(data)-off || size > b.cfg.maxPending {
			b.lost.Add(1)
			b.lossLog.Error().Int("bytes", len(data)).Str("parts", desc).
				Msg("backplane message skipped: malformed, or a read larger than --max-pending (give every node the same --max-message)")
			return ms[:first]
		}
		var from *client
		if local {
			from = b.sender(id)
		}
		end := off + size
		if n := len(ms); n > first && ms[n-1].from == from &&
			end-start <= b.maxFrame && ms[n-1].count+count <= b.hub.maxBatchMsgs {
			ms[n-1].data = data[start:end:end]
			ms[n-1].count += count
		} else {
			ms = append(ms, message{from: from, data: data[off:end:end], count: count})
			start = off
		}
		off = end
	}
	return ms
}

// parsePart parses one read of hdrParts: "client:bytes:messages".
func parsePart(p string) (id uint64, size, count int, ok bool) {
	f0, rest, ok0 := strings.Cut(p, ":")
	f1, f2, ok1 := strings.Cut(rest, ":")
	if !ok0 || !ok1 {
		return 0, 0, 0, false
	}
	id, err0 := strconv.ParseUint(f0, 10, 64)
	size, err1 := strconv.Atoi(f1)
	count, err2 := strconv.Atoi(f2)
	return id, size, count, err0 == nil && err1 == nil && err2 == nil && size > 0 && count > 0
}
