package loadgen

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// A publisher is one publisher connection.
type publisher struct {
	// Immutable after dialAll.
	id   int
	node int // index in the target's nodes
	run  *run
	conn pubConn

	// Owned by publish; read by others after it returns.
	sent     uint64 // messages that left in full (pubConn.sent)
	inWindow uint64 // of those, sent (with --rate: scheduled) inside the window
	err      error  // why publishing stopped early; nil if it ran to the end

	// Accessed atomically: publish stores, the progress loop loads.
	count atomic.Uint64 // a copy of seq, stored after each flush
}

// publish sends publisher p's messages from t0 until we, paced by pacer or,
// if pacer is nil, as fast as the connection accepts them. It returns at we
// (after a last flush, bounded by flushGrace), on a write error, or when
// ctx is done.
func (p *publisher) publish(ctx context.Context, pacer *pacer, t0, ws, we int64) {
	r := p.run
	frame := newFrame(r.opts.Framing, r.opts.Size)
	payload := frame[len(frame)-r.opts.Size:]
	var seq, inWindow uint64
	var err error
	// The last flush may block for flushGrace after the end, no longer.
	deadline := time.AfterFunc(time.Duration(we-nanotime())+flushGrace, p.conn.abort)
	defer deadline.Stop()
	// send writes the next message, due at sched, timed from ts.
	send := func(ts, sched int64) {
		encode(payload, header{pub: uint16(p.id), seq: seq, ts: ts})
		if werr := p.conn.write(frame, payload); werr != nil {
			err = werr
			return
		}
		seq++
		if sched >= ws && sched < we {
			inWindow++
		}
	}
	flush := func(final bool) {
		if err == nil {
			err = p.conn.flush(final)
		}
		p.count.Store(seq)
	}

	timer := time.NewTimer(time.Duration(t0 - nanotime()))
	defer timer.Stop()
	var woke int64 // when the publisher last woke from its timer
	for wake := t0; err == nil; {
		if d := time.Duration(wake - nanotime()); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				err = ctx.Err()
				continue
			case <-timer.C:
			}
			woke = nanotime()
		}
		now := nanotime()
		if pacer == nil {
			if now >= we {
				break
			}
			// Unthrottled: a batch, a flush, and a look at ctx.
			for i := 0; i < flushEvery && err == nil && now < we; i++ {
				send(now, now)
				now = nanotime()
			}
			flush(false)
			if err == nil {
				err = ctx.Err()
			}
			wake = now
			continue
		}
		// Time each message from its schedule, so that a publisher held
		// back by the server (a write that blocked) shows it as latency, but
		// not from before the publisher woke up: Go timers may fire up to
		// ~1 ms late, and that lateness is bench's, not the server's.
		// Every message due before we is sent, late if need be.
		for due := pacer.due(now, we); seq < due && err == nil; {
			sched := pacer.at(seq)
			send(max(sched, woke), sched)
		}
		flush(false)
		if now >= we {
			break
		}
		wake = min(pacer.wake(seq, now), we)
	}
	flush(true)

	p.sent = p.conn.sent()
	p.inWindow = min(inWindow, p.sent)
	if err != nil && !r.closing.Load() {
		p.err = fmt.Errorf("publisher %d: %w", p.id, err)
	}
}

// minPause is the shortest wait between two batches of a paced
// publisher. At high rates it makes every wake-up send a batch (rate times
// minPause messages) instead of sleeping once per message.
const minPause = 200 * time.Microsecond

// A pacer is one publisher's schedule under --rate: message k is due at
// start + k*interval on nanotime's clock. Latency is measured from that
// scheduled time rather than from when the message was written, so a
// publisher that falls behind because the server pushes back shows it in the
// latency figures instead of hiding it (the coordinated-omission
// correction). publisher.publish only excludes its own timer's
// lateness.
type pacer struct {
	start    int64   // due time of message 0
	interval float64 // nanoseconds between messages
}

// newPacers splits a total rate over pubs publishers starting at t0. Each
// gets rate/pubs, and their schedules are staggered evenly so that the
// merged stream is smooth.
func newPacers(rate float64, pubs int, t0 int64) []pacer {
	interval := float64(pubs) * 1e9 / rate
	ps := make([]pacer, pubs)
	for i := range ps {
		ps[i] = pacer{start: t0 + int64(interval*float64(i)/float64(pubs)), interval: interval}
	}
	return ps
}

// at returns when message k is due.
func (p pacer) at(k uint64) int64 { return p.start + int64(float64(k)*p.interval) }

// due returns how many messages are due at now, counting only those due
// before end.
func (p pacer) due(now, end int64) uint64 {
	t := min(now, end-1)
	if t < p.start {
		return 0
	}
	return uint64(float64(t-p.start)/p.interval) + 1
}

// wake returns when a publisher that has sent sent messages should wake next:
// when the next one is due, but at least minPause after now.
func (p pacer) wake(sent uint64, now int64) int64 {
	return max(p.at(sent), now+int64(minPause))
}
