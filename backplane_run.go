package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// run is the backplane goroutine, started by the server. It runs the
// publisher on the connection dialBackplane made and, while the connection
// is down, makes another with backoff; the consumer runs beside it. It
// returns once Shutdown has drained it (every message read published and
// delivered back) or given up (abort), having closed fed and the connection.
func (b *backplane) run() {
	defer b.stopNow() // readers still blocked on in return: nothing will take it
	defer close(b.fed)
	var backoff time.Duration
	wait := func(err error) bool { // false on abort
		backoff = min(max(2*backoff, bpBackoffMin), bpBackoffMax)
		if err != nil {
			b.lossLog.Warn().Err(err).Dur("backoff", backoff).Msg("backplane reconnect failed")
		}
		select {
		case <-time.After(backoff):
			return true
		case <-b.abort:
			b.abandoned()
			return false
		}
	}
	for {
		if b.sess == nil {
			sess, err := b.reopen()
			if err != nil {
				if !wait(err) {
					return
				}
				continue
			}
			b.sess = sess
			b.reconnects.Add(1)
		}
		start := time.Now()
		end := b.session(b.sess)
		b.sess.nc.Close()
		b.sess = nil
		switch {
		case errors.Is(end, errBackplaneAborted):
			b.abandoned()
			return
		case end == nil: // drained
			return
		}
		b.log.Error().Err(end).Int("unstored", b.unstored()).Msg("backplane down; clients wait")
		// A session that failed at once (its consumer could not be made)
		// counts as a failed attempt: no reconnecting in a tight loop.
		if time.Since(start) < bpBackoffMax {
			if !wait(nil) {
				return
			}
		} else {
			backoff = 0
		}
	}
}

// reopen connects again after a failure. It resumes after the last message
// delivered, unless the stream was recreated (a memory stream whose server
// restarted): then it starts at the new stream's beginning and logs the loss.
func (b *backplane) reopen() (*bpSession, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Cancels the attempt's requests on abort; returns when reopen does.
	go func() {
		select {
		case <-b.abort:
			cancel()
		case <-ctx.Done():
		}
	}()
	sess, info, err := b.open(ctx)
	if err != nil {
		return nil, err
	}
	if !info.Created.Equal(b.created) || info.State.LastSeq < b.lastDelivered.Load() {
		b.log.Error().Uint64("delivered", b.lastDelivered.Load()).Uint64("seq", info.State.LastSeq).
			Msg("backplane stream was recreated; what it held and this node had not delivered is lost")
		b.created = info.Created
		b.lastDelivered.Store(0)
		b.streamLast.Store(0)
	}
	b.seen(info.State.LastSeq)
	b.log.Info().Str("url", sess.nc.ConnectedUrlRedacted()).Uint64("seq", b.lastDelivered.Load()).
		Int("unstored", b.unstored()).Msg("backplane reconnected")
	return sess, nil
}

// session runs the consumer and the publisher on sess until sess fails
// (that error), Shutdown drains the backplane (nil), or gives up
// (errBackplaneAborted).
func (b *backplane) session(sess *bpSession) error {
	cons, err := sess.stream.OrderedConsumer(context.Background(), jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   b.lastDelivered.Load() + 1,
	})
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(b.cfg.bpBuffer))
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	progress := make(chan struct{}, 1)
	consumerDone := make(chan struct{})
	var consumerErr error // written before consumerDone is closed
	// The consumer returns once it.Stop below has run, when sess fails, or
	// on abort; session waits for it, so one consumer at most runs.
	go func() {
		defer close(consumerDone)
		consumerErr = b.consume(it, progress)
	}()
	b.up.Store(true)

	end := b.publishLoop(sess, consumerDone)
	if end == nil {
		end = b.deliverOwn(sess, progress, consumerDone)
	}
	b.up.Store(false)
	it.Stop()
	<-consumerDone
	if errors.Is(end, errConsumerStopped) {
		end = fmt.Errorf("consumer: %w", consumerErr)
	}
	return end
}

// errConsumerStopped ends a session whose consumer returned on its own.
var errConsumerStopped = errors.New("consumer stopped")

// deliverOwn is the end of a drain: every message read has been published,
// and this node's clients get what the stream holds up to the last of them.
func (b *backplane) deliverOwn(sess *bpSession, progress <-chan struct{}, consumerDone <-chan struct{}) error {
	target := b.streamLast.Load()
	for b.lastDelivered.Load() < target {
		select {
		case <-progress:
		case <-consumerDone:
			return errConsumerStopped
		case <-sess.closed:
			return errConnClosed
		case <-b.abort:
			return errBackplaneAborted
		}
	}
	return nil
}

// abandoned logs what Shutdown's deadline cut off.
func (b *backplane) abandoned() {
	if n := b.unstored(); n > 0 {
		b.log.Warn().Int("messages", n).Msg("backplane stopped before these read messages were stored")
	}
}
