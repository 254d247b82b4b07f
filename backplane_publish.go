package main

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// bpRetryWait is the pause before a publish that failed is sent again.
	bpRetryWait = 100 * time.Millisecond
	// bpPartHeader bounds the bytes hdrParts takes per read in a batch.
	bpPartHeader = 48
)

// errConnClosed ends a session whose NATS connection closed.
var errConnClosed = errors.New("connection closed")

// A bpBatch is one stream message: the reads gathered while the previous one
// awaited its acknowledgement, back to back, in the order read. Once sealed
// it never changes, and it keeps its message id however often it is sent, so
// that the stream stores it once.
type bpBatch struct {
	parts []message // the reads in msg.Data, in order; their data is msg.Data's
	count int       // framed messages in all parts
	msg   *nats.Msg
	ack   jetstream.PubAckFuture // of the last send on the current connection; nil before it
}

// publishLoop publishes what readers hand to in. It runs on run's goroutine
// and returns when sess fails (an error), when Shutdown has drained it (nil:
// every message read is acknowledged) or when Shutdown gives up
// (errBackplaneAborted).
//
// One stream message at most awaits its acknowledgement (inflight); what
// readers hand over meanwhile is gathered (up to --backplane-window reads and
// the NATS server's max_payload) and published as the next stream message
// once the acknowledgement arrives. When the gathered batch is full the loop
// stops taking from in, readers block, and TCP pushes back on their clients
// (README). A light stream goes out one read at a time at once; a heavy one in
// batches whose size follows the round trip to JetStream, as the hub's own
// batching follows its writers.
//
// With one message in flight, each client's messages keep their order through
// any fault: a publish that fails (no stream leader, no acknowledgement
// within bpAckTimeout, the connection lost) is sent again, with the same
// message id, before anything read after it, whether on this connection or,
// after run has made a new one, on that (nats.go does not reconnect by itself:
// NoReconnect). Several in flight would let a new stream leader store a later
// message before an earlier one lost with the old leader.
func (b *backplane) publishLoop(sess *bpSession, consumerDone <-chan struct{}) error {
	if b.inflight != nil {
		if err := b.send(sess, b.inflight); err != nil {
			return err
		}
	}
	info := time.NewTicker(bpInfoEvery)
	defer info.Stop()
	delivered := b.lastDelivered.Load() // as of the last tick
	readersGone, draining := b.readersGone, b.readersGoneClosed()
	for {
		if b.inflight == nil && len(b.gather) > 0 {
			b.inflight = b.seal()
			if err := b.send(sess, b.inflight); err != nil {
				return err
			}
		}
		if draining && b.inflight == nil && len(b.in) == 0 {
			return nil
		}
		var in chan message
		if len(b.gather) < b.cfg.bpWindow && b.gatherBytes+b.maxFrame+bpPartHeader*(len(b.gather)+1) <= b.batchLimit(sess) {
			in = b.in
		}
		var ok <-chan *jetstream.PubAck
		var failed <-chan error
		if b.inflight != nil {
			ok, failed = b.inflight.ack.Ok(), b.inflight.ack.Err()
		}
		select {
		case m := <-in:
			b.gather = append(b.gather, m)
			b.gatherBytes += len(m.data)
		case ack := <-ok:
			b.acked(ack)
		case err := <-failed:
			b.lossLog.Warn().Err(err).Int("messages", b.inflight.count).Msg("backplane publish not acknowledged; sending again")
			select {
			case <-time.After(bpRetryWait):
			case <-sess.closed:
				return errConnClosed
			case <-b.abort:
				return errBackplaneAborted
			}
			if err := b.send(sess, b.inflight); err != nil {
				return err
			}
		case <-info.C:
			// A consumer that delivers learns the stream's last sequence
			// from every message (consume); only one that has delivered
			// nothing for a tick needs to ask. Asking blocks this loop for
			// a round trip to NATS, acknowledgements and gathering with it,
			// which every second cost the whole node's latency.
			if now := b.lastDelivered.Load(); now == delivered {
				b.refreshLast(sess)
			} else {
				delivered = now
			}
		case <-readersGone:
			draining, readersGone = true, nil
		case <-consumerDone:
			return errConsumerStopped
		case <-sess.closed:
			return errConnClosed
		case <-b.abort:
			return errBackplaneAborted
		}
	}
}

// readersGoneClosed reports whether the hub has said that every reader left.
func (b *backplane) readersGoneClosed() bool {
	select {
	case <-b.readersGone:
		return true
	default:
		return false
	}
}

// batchLimit is the most bytes of data and per-read headers one stream
// message may carry on sess.
func (b *backplane) batchLimit(sess *bpSession) int {
	return int(sess.nc.MaxPayload()) - bpHeaderReserve
}

// seal makes the gathered reads the next stream message, with a new message
// id. hdrParts lists each read as client id, bytes and framed messages.
func (b *backplane) seal() *bpBatch {
	parts := b.gather
	b.gather, b.gatherBytes = nil, 0
	b.nextID++
	var data []byte
	if len(parts) == 1 {
		data = parts[0].data // shared read-only, as the hub shares it
	} else {
		data = make([]byte, 0, b.gatherBytesOf(parts))
	}
	var desc strings.Builder
	count := 0
	for i, m := range parts {
		if len(parts) > 1 {
			data = append(data, m.data...)
		}
		if i > 0 {
			desc.WriteByte(' ')
		}
		desc.WriteString(strconv.FormatUint(m.from.id, 10))
		desc.WriteByte(':')
		desc.WriteString(strconv.Itoa(len(m.data)))
		desc.WriteByte(':')
		desc.WriteString(strconv.Itoa(m.count))
		count += m.count
	}
	hdr := nats.Header{
		jetstream.MsgIDHeader: {b.node + "-" + strconv.FormatUint(b.nextID, 10)},
		hdrNode:               {b.node},
		hdrParts:              {desc.String()},
		hdrCount:              {strconv.Itoa(count)},
	}
	return &bpBatch{parts: parts, count: count, msg: &nats.Msg{Subject: b.cfg.bpStream, Header: hdr, Data: data}}
}

// gatherBytesOf returns the bytes of data in parts.
func (b *backplane) gatherBytesOf(parts []message) int {
	n := 0
	for _, m := range parts {
		n += len(m.data)
	}
	return n
}

// acked records the acknowledgement of the message in flight.
func (b *backplane) acked(ack *jetstream.PubAck) {
	p := b.inflight
	b.inflight = nil
	b.published.Add(1)
	b.seen(ack.Sequence)
	for _, m := range p.parts {
		m.from.bpSeq.Store(ack.Sequence)
		m.from.bpAcked.Add(uint64(m.count))
	}
	b.advanced()
}

// send publishes p on sess without waiting for its acknowledgement.
func (b *backplane) send(sess *bpSession, p *bpBatch) error {
	ack, err := sess.js.PublishMsgAsync(p.msg)
	if err != nil {
		p.ack = nil
		return err
	}
	p.ack = ack
	return nil
}

// unstored is how many reads this node holds that the stream has not
// acknowledged.
func (b *backplane) unstored() int {
	n := len(b.gather) + len(b.in)
	if b.inflight != nil {
		n += len(b.inflight.parts)
	}
	return n
}

// refreshLast learns the stream's last sequence, so that the lag metric
// grows while this node delivers nothing (its clients are slow). It waits
// for NATS, for at most half a tick.
func (b *backplane) refreshLast(sess *bpSession) {
	ctx, cancel := context.WithTimeout(context.Background(), bpInfoEvery/2)
	defer cancel()
	if info, err := sess.stream.Info(ctx); err == nil {
		b.seen(info.State.LastSeq)
	}
}
