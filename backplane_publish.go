package main

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// bpRetryWait is the pause before a publish that failed is sent again.
const bpRetryWait = 100 * time.Millisecond

// errConnClosed ends a session whose NATS connection closed.
var errConnClosed = errors.New("connection closed")

// A bpPending is a publish awaiting its acknowledgement. msg keeps its message
// id however often it is sent, so that the stream stores it once.
type bpPending struct {
	from  *client // the client that sent it
	count int     // framed messages in it
	msg   *nats.Msg
	ack   jetstream.PubAckFuture // of the last send on the current connection; nil before it
	sent  time.Time
}

// publishLoop publishes what readers hand to in, each read's worth as one
// stream message, keeping at most --backplane-window unacknowledged: when the
// window is full it stops taking from in, readers block, and TCP pushes back
// on their clients (README). It runs on run's goroutine and returns when
// sess fails (an error), when Shutdown has drained it (nil: every message read
// is acknowledged) or when Shutdown gives up (errBackplaneAborted).
//
// Acknowledgements are taken in order. A publish that fails (no stream leader,
// no acknowledgement within bpAckTimeout) is sent again, with every one after
// it, in order and with the same message ids: JetStream stores once what it
// already had, and each client's messages keep their order. To keep that
// order across a fault:
//  1. nats.go does not reconnect by itself (NoReconnect): a new connection is
//     run's, and the window is sent again on it before anything new, so a
//     message never races one read before it over two connections;
//  2. nothing new is published while the oldest publish has waited
//     bpHeadStall, so a new stream leader elected meanwhile (seconds) cannot
//     store a later message before the one lost with the old leader.
func (b *backplane) publishLoop(sess *bpSession, consumerDone <-chan struct{}) error {
	for _, p := range b.window {
		if err := b.send(sess, p); err != nil {
			return err
		}
	}
	head := stoppedTimer()
	defer head.Stop()
	var armed *bpPending // the window's head when head was last armed
	info := time.NewTicker(bpInfoEvery)
	defer info.Stop()
	readersGone, draining := b.readersGone, false
	for {
		if draining && len(b.in) == 0 && len(b.window) == 0 {
			return nil
		}
		var in chan message
		if len(b.window) < b.cfg.bpWindow {
			in = b.in
		}
		var ok <-chan *jetstream.PubAck
		var failed <-chan error
		if len(b.window) > 0 {
			p := b.window[0]
			ok, failed = p.ack.Ok(), p.ack.Err()
			if wait := bpHeadStall - time.Since(p.sent); wait <= 0 {
				in = nil
			} else if armed != p {
				armed = p
				head.Reset(wait)
			}
		}
		select {
		case m := <-in:
			p := b.pending(m)
			b.window = append(b.window, p)
			if err := b.send(sess, p); err != nil {
				return err
			}
		case ack := <-ok:
			p := b.window[0]
			b.window[0] = nil
			b.window = b.window[1:]
			b.published.Add(1)
			b.seen(ack.Sequence)
			p.from.bpSeq.Store(ack.Sequence)
			p.from.bpAcked.Add(uint64(p.count))
			b.advanced()
		case err := <-failed:
			b.lossLog.Warn().Err(err).Int("unacked", len(b.window)).Msg("backplane publish not acknowledged; sending again")
			select {
			case <-time.After(bpRetryWait):
			case <-sess.closed:
				return errConnClosed
			case <-b.abort:
				return errBackplaneAborted
			}
			for _, p := range b.window {
				if err := b.send(sess, p); err != nil {
					return err
				}
			}
		case <-head.C:
			armed = nil // re-evaluated at the top: the head may be stalled now
		case <-info.C:
			b.refreshLast(sess)
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

// pending makes the stream message for m, with a new message id.
func (b *backplane) pending(m message) *bpPending {
	b.nextID++
	hdr := nats.Header{
		jetstream.MsgIDHeader: {b.node + "-" + strconv.FormatUint(b.nextID, 10)},
		hdrNode:               {b.node},
		hdrClient:             {strconv.FormatUint(m.from.id, 10)},
		hdrCount:              {strconv.Itoa(m.count)},
	}
	return &bpPending{from: m.from, count: m.count, msg: &nats.Msg{Subject: b.cfg.bpStream, Header: hdr, Data: m.data}}
}

// send publishes p on sess without waiting for its acknowledgement.
func (b *backplane) send(sess *bpSession, p *bpPending) error {
	ack, err := sess.js.PublishMsgAsync(p.msg)
	if err != nil {
		p.ack = nil
		return err
	}
	p.ack, p.sent = ack, time.Now()
	return nil
}

// refreshLast learns the stream's last sequence, so that the lag metric
// grows while this node delivers nothing (its clients are slow).
func (b *backplane) refreshLast(sess *bpSession) {
	ctx, cancel := context.WithTimeout(context.Background(), bpInfoEvery/2)
	defer cancel()
	if info, err := sess.stream.Info(ctx); err == nil {
		b.seen(info.State.LastSeq)
	}
}
