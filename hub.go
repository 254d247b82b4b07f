package main

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// A message is what a reader hands the hub: count complete messages from one
// client, back to back and framed exactly as received (one read's worth, so
// that a burst costs one allocation and one channel send). The hub and every
// writer share data read-only: nobody modifies it once it is sent on publish.
// With --backplane the consumer hands them over instead; from is then this
// node's client that sent it, or nil.
type message struct {
	from  *client
	data  []byte
	count int
}

// A batch is what the hub hands each client in one channel send: messages in
// the hub's order. The hub fills it (while it holds it for busy writers, see
// take); once fanned out it is immutable and shared by every receiver, so the
// hub pays per batch, not per message, for each client.
type batch struct {
	msgs  []message
	count int // sum of msgs[i].count
	bytes int // sum of len(msgs[i].data)
}

const (
	// stallTick is how often a stalled hub re-checks who is behind.
	stallTick = 10 * time.Millisecond
	// defaultCoalesce is the default --coalesce: the longest the hub holds
	// messages for writers that are still busy with the previous fan-out
	// (see take). It matters only when one writer is stuck in a write that
	// began while it was caught up (its peer just stopped reading): without a
	// bound, everyone's next messages would wait for that write to end.
	// maxCoalesce bounds the flag.
	defaultCoalesce = 2 * time.Millisecond
	maxCoalesce     = time.Second
	// defaultStallLimit is the default --stall-limit: how long the hub waits
	// for room in a full queue before it may judge that client slow, the
	// moment one frozen reader can hold the stream (README, slow clients).
	// A reader that keeps reading can look frozen for longer than one would
	// think: Linux reopens a full receive window only once the reader has
	// freed a sixteenth of its buffer (up to 6 MiB), so a subscriber reading
	// 400 KB/s shows a stuck write for a second. With 500 ms, an
	// unthrottled publisher into 1000 subscribers of one busy process got 3
	// to 7 of them closed as slow in every run; with 2 s, one in five runs;
	// with 3 or 5 s, none in five (`echohub bench --subs 1000 --rate 0`, 2-core VM).
	defaultStallLimit = 3 * time.Second
	// publishQueue is the capacity of the hub's publish inbox, in messages
	// (each up to a read's worth). Short on purpose: a flooding client's
	// backlog then waits in its own socket, where TCP pushes back on it,
	// rather than in the inbox ahead of everyone else's messages (p99 of the
	// others under a flood: 70-80 ms with 16, 190 ms with 256; see
	// BenchmarkFairness). The hub still takes everything waiting at once.
	publishQueue = 16
)

// A hub is the one goroutine that owns the client registry and fans every
// message out to every client's queue, in one total order.
type hub struct {
	// Immutable after newHub.
	cfg           config
	log           zerolog.Logger
	dropLog       zerolog.Logger // sampled: drop warnings can come per batch
	m             *metrics
	maxBatchMsgs  int // a batch always fits an empty queue: see newHub
	maxBatchBytes int
	join          chan *client  // a new client, before its loops start
	leave         chan *client  // a client whose readLoop has ended
	publish       chan message  // messages from readers, or with --backplane from its consumer
	room          chan struct{} // cap 1: a writer freed room in a stalled client's queue
	ready         chan struct{} // cap 1: a writer went idle while the hub holds messages
	stop          chan struct{} // closed by shutdown: finish once every reader has left
	done          chan struct{} // closed when run returns
	holdTimer     *time.Timer   // runs for --coalesce while the hub holds messages; see take
	stopOnce      sync.Once     // closes stop

	// Set by newHub and, with --backplane, by backplane.attach before run
	// starts; immutable after. With a backplane, readers hand their messages
	// to bp instead of publish, and bp's consumer hands the hub the stream's
	// messages on publish.
	bp         *backplane      // nil without --backplane
	intake     chan<- message  // where readers hand messages: publish, or bp.in
	intakeDone <-chan struct{} // closed when intake takes nothing more: done, or bp.abort

	// Accessed atomically: the hub adds to busy and sets the others, writers
	// subtract from busy (client.dequeue). See take.
	busy    atomic.Int64 // clients with messages queued or being written
	settled atomic.Int64 // busy at the start of the last fan-out: clients that were behind before it
	holding atomic.Bool  // held is not nil: a writer going idle signals ready

	// Owned by the hub goroutine (hub.run).
	clients    []*client // registered clients, in no particular order
	reading    int       // registered clients whose readLoop has not left
	held       *batch    // messages taken from publish and not yet fanned out (see take)
	lastFanout time.Time // when flush last fanned out, with --coalesce (see paced)
	slow       []*client // scratch: clients to disconnect after a fanout
	stall      *time.Timer
	penalty    map[netip.Addr]time.Time // addresses whose client was closed or skipped as slow, and when (stall.go)
	budget     stallBudget              // the waiting left to spend on clients judged slow (stall.go)
	sp         spill                    // what the clients the hub went on without miss (spill.go)
}

// newHub returns a hub for cfg; run starts it.
func newHub(cfg config, log zerolog.Logger, m *metrics) *hub {
	// A reader hands over at most maxBatchMsgs messages at a time, and one
	// message is at most maxFrame bytes. take stops adding to a batch once
	// it reaches either limit, so a batch holds under 2*maxBatchMsgs <= queue
	// messages and under maxBatchBytes+maxFrame <= max-pending bytes: it
	// always fits an empty queue.
	maxFrame := cfg.framing.maxFrame(cfg.maxMessage)
	h := &hub{
		cfg:           cfg,
		log:           log,
		dropLog:       log.Sample(&zerolog.BurstSampler{Burst: 5, Period: time.Second}),
		m:             m,
		maxBatchMsgs:  max(1, cfg.queue/4),
		maxBatchBytes: min(cfg.maxPending/4, cfg.maxPending-maxFrame),
		join:          make(chan *client),
		leave:         make(chan *client),
		publish:       make(chan message, publishQueue),
		room:          make(chan struct{}, 1),
		ready:         make(chan struct{}, 1),
		stop:          make(chan struct{}),
		done:          make(chan struct{}),
		holdTimer:     stoppedTimer(),
		penalty:       make(map[netip.Addr]time.Time),
		stall:         stoppedTimer(),
		budget:        stallBudget{left: cfg.stallLimit, at: time.Now()},
	}
	h.intake, h.intakeDone = h.publish, h.done
	return h
}

// stoppedTimer returns a timer that fires only once it is Reset.
func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

// shutdown tells the hub to finish: from now on a client whose reader leaves
// stays registered, so that it still gets what the other readers hand over,
// and run returns once every reader has left. The server calls it before it
// stops the readers. It is safe to call more than once, and before run.
func (h *hub) shutdown() { h.stopOnce.Do(func() { close(h.stop) }) }

// closing reports whether shutdown has been called.
func (h *hub) closing() bool {
	select {
	case <-h.stop:
		return true
	default:
		return false
	}
}

// run is the hub goroutine. It returns after shutdown and once every
// registered client's readLoop has left (with --backplane: and the backplane
// has delivered back everything they read, see backplane.fed), having closed
// every send channel, so that writers flush what is queued and exit.
func (h *hub) run() {
	defer close(h.done)
	stop := h.stop          // nil once received: the hub is draining
	var fed <-chan struct{} // nil once the backplane will hand over nothing more
	if h.bp != nil {
		fed = h.bp.fed
	}
	for stop != nil || h.reading > 0 || fed != nil {
		if stop == nil && h.reading == 0 && h.bp != nil {
			h.bp.readersLeft() // it publishes what they read, delivers it back, then closes fed
		}
		select {
		case <-fed:
			fed = nil
		case c := <-h.join:
			h.flush() // c gets what is read from now on, not what was held
			h.add(c)
		case c := <-h.leave:
			// The reader sent its last messages before it left: fan out
			// those and everything held first, so none of them is lost to
			// anyone, c included.
			for n := len(h.publish); n > 0; {
				n -= h.take(<-h.publish)
			}
			h.flush()
			h.left(c)
		case m := <-h.publish:
			h.take(m)
		case <-h.ready:
			if h.holding.Load() && h.writersDone() {
				h.paced()
			}
		case <-h.holdTimer.C:
			h.flush()
		case <-h.room: // a spilled client's writer freed room
			h.feedAll()
		case <-stop:
			stop = nil
		}
	}
	h.flush() // stops holdTimer: no timer outlives the hub
	for len(h.clients) > 0 {
		h.remove(h.clients[len(h.clients)-1], reasonNone)
	}
}

// register hands c to the hub. It reports false if the hub has exited.
func (h *hub) register(c *client) bool {
	select {
	case h.join <- c:
		return true
	case <-h.done:
		return false
	}
}

// unregister tells the hub that c's readLoop has ended.
func (h *hub) unregister(c *client) {
	if h.bp != nil && c.closeReason() == reasonEOF {
		// README: a client that half-closes still gets its own messages;
		// with a backplane they are still on their way through the stream.
		h.bp.settle(c)
	}
	select {
	case h.leave <- c:
	case <-h.done:
	}
}

// add registers c.
func (h *hub) add(c *client) {
	c.index, c.reading = len(h.clients), true
	h.clients = append(h.clients, c)
	h.reading++
	h.m.clients.Add(1)
	if h.bp != nil && h.cfg.excludeSender {
		h.bp.remember(c)
	}
}

// left handles the end of c's readLoop. While the server shuts down, c stays
// registered, so it still gets what the other readers hand over; run removes
// every client at the end.
func (h *hub) left(c *client) {
	if c.index < 0 || !c.reading {
		return // removed already, by a slow-client close
	}
	c.reading = false
	h.reading--
	if c.closeReason() == reasonWriteTimeout {
		h.penalize(c) // a frozen reader, closed by the watchdog: see penalized
	}
	// closing, not run's own view: a leave may reach the hub before stop
	// does, and shutdown comes before the readers are stopped. A spilled
	// client (one that half-closed still reads) stays until it has what it
	// missed or is judged (see leaveIfDone).
	if !h.closing() && !c.spilled {
		h.remove(c, reasonNone)
	}
}

// remove unregisters c and closes its send channel; with a reason, it also
// closes the connection. Only the hub calls it, and only once per client. A
// client still spilled at shutdown first gets what it missed.
func (h *hub) remove(c *client, r closeReason) {
	if c.spilled {
		if r == reasonNone && !h.catchUp(c) {
			h.penalize(c)
			if h.cfg.slow == slowDisconnect {
				r = reasonSlowClient
			} else {
				h.dropSpill(c)
			}
		}
		h.unspill(c)
		h.trim()
	}
	last := len(h.clients) - 1
	h.clients[c.index] = h.clients[last]
	h.clients[c.index].index = c.index
	h.clients[last] = nil
	h.clients = h.clients[:last]
	c.index = -1
	if c.reading {
		c.reading = false
		h.reading--
	}
	close(c.send)
	h.m.clients.Add(-1)
	if h.bp != nil && h.cfg.excludeSender {
		h.bp.forget(c)
	}
	if r != reasonNone {
		c.close(r)
	}
}

// take adds m, and whatever else is waiting in publish, to the held batch,
// and returns how many messages it took from publish. This is the hub's
// batching: it fans the batch out at once when the writers have finished the
// previous fan-out, and otherwise holds it, gathering what arrives, until
// they have (a writer going idle signals ready) and the last fan-out is
// --coalesce old (see paced), the batch is full, or it has been held for
// --coalesce. So a light stream goes out one read at a time with no delay,
// and a heavy one at most once per --coalesce, in batches whose size follows
// the load (docs/design.md).
//
// "Finished" leaves out clients that were already behind before the last
// fan-out (settled), so that one slow reader does not set everyone's pace.
func (h *hub) take(m message) int {
	if h.held == nil {
		h.held = &batch{msgs: make([]message, 0, min(len(h.publish)+1, 64))}
	}
	b := h.held
	taken := 1
	b.add(m)
	for !h.full(b) {
		select {
		case m := <-h.publish:
			b.add(m)
			taken++
			continue
		default:
		}
		break
	}
	switch {
	case h.full(b) || h.cfg.coalesce == 0:
		h.flush()
	case h.holding.Load():
		// A hold is in progress: b gathers until it ends (see paced).
	case h.writersDone():
		h.flush()
	default:
		// 1. Announce the hold, so that a writer going idle from now on
		//    signals ready; 2. look again, for one that went idle before.
		h.holding.Store(true)
		h.holdTimer.Reset(h.cfg.coalesce)
		if h.writersDone() {
			h.flush()
		}
	}
	return taken
}

// paced ends a hold once the writers are done: at once if the last fan-out
// was --coalesce or more ago, and otherwise when it will have been, so that
// while the writers are busy the hub fans out at most once per --coalesce.
// Under load each writer then wakes once per --coalesce, for everything that
// came meanwhile, which is what keeps the server's CPU per message low; a
// read that finds the writers idle and no hold in progress still goes out at
// once.
func (h *hub) paced() {
	if wait := h.cfg.coalesce - time.Since(h.lastFanout); wait > 0 {
		h.holdTimer.Reset(wait)
		return
	}
	h.flush()
}

// writersDone reports whether every writer that was caught up before the
// last fan-out has written it out.
func (h *hub) writersDone() bool { return h.busy.Load() <= h.settled.Load() }

// full reports whether b has reached a batch limit (see newHub).
func (h *hub) full(b *batch) bool {
	return b.count >= h.maxBatchMsgs || b.bytes >= h.maxBatchBytes
}

// flush fans out the held batch, if any, and ends the hold.
func (h *hub) flush() {
	b := h.held
	if b == nil {
		return
	}
	h.held = nil
	if h.holding.Load() {
		h.holding.Store(false)
		h.holdTimer.Stop()
	}
	if h.cfg.coalesce > 0 {
		h.lastFanout = time.Now()
	}
	h.fanout(b)
}

// add appends m to b.
func (b *batch) add(m message) {
	b.msgs = append(b.msgs, m)
	b.count += m.count
	b.bytes += len(m.data)
}

// fanout queues b for every registered client without waiting on any one of
// them for more than a moment (see deliver). It runs on the hub goroutine.
func (h *hub) fanout(b *batch) {
	h.m.fanouts.Add(1)
	h.spillAdd(b)
	h.settled.Store(h.busy.Load())
	if h.cfg.excludeSender {
		for _, m := range b.msgs {
			if m.from != nil { // nil: from the backplane, sent by no client of this node
				m.from.ownMsgs += m.count
			}
		}
	}
	// A queued batch keeps all its bytes alive, c's own messages included
	// (--exclude-sender), so all of them count toward c's --max-pending.
	for _, c := range h.clients {
		if n := b.count - c.ownMsgs; n > 0 && !c.spilled {
			h.deliver(c, b, n, b.bytes)
		}
	}
	h.feedAll() // spilled clients get b once they have what they missed
	if h.cfg.excludeSender {
		for _, m := range b.msgs {
			if m.from != nil {
				m.from.ownMsgs = 0
			}
		}
	}
	for i, c := range h.slow {
		h.remove(c, reasonSlowClient)
		h.slow[i] = nil
	}
	h.slow = h.slow[:0]
}

// deliver queues b, of which n messages and size bytes are for c. When c's
// queue is full the hub waits for room, which slows intake and so pushes back
// on publishers (README), but only while c keeps up with the others: a full
// client whose write has been blocked for --stall-pause while most others
// have room is spilled, and the hub goes on without it (spill.go); one that
// cannot be is slow (stall.go), and is disconnected or, under --slow=drop,
// skipped until its queue is half empty.
func (h *hub) deliver(c *client, b *batch, n, size int) {
	if c.lagging {
		if h.congested(c) {
			h.drop(c, n, size)
			return
		}
		c.lagging = false
	}
	if !h.fits(c, n, size) {
		switch h.waitRoom(c, n, size, b) {
		case goOn:
			return
		case slowClient:
			h.penalize(c)
			if h.cfg.slow == slowDrop {
				c.lagging = true
				h.drop(c, n, size)
			} else {
				h.slow = append(h.slow, c)
			}
			return
		}
	}
	h.enqueue(c, b, n, size)
}

// enqueue queues b, of which n messages and size bytes are for c; they fit.
func (h *hub) enqueue(c *client, b *batch, n, size int) {
	c.pendingBytes.Add(int64(size))
	if c.pendingMsgs.Add(int64(n)) == int64(n) {
		h.busy.Add(1) // c was idle; its writer subtracts when it is again
	}
	c.send <- b // never blocks: only the hub sends, and fits saw room
}

// fits reports whether n more messages of size bytes fit c's queue.
func (h *hub) fits(c *client, n, size int) bool {
	return c.pendingMsgs.Load()+int64(n) <= int64(h.cfg.queue) &&
		c.pendingBytes.Load()+int64(size) <= int64(h.cfg.maxPending) &&
		len(c.send) < cap(c.send)
}

// congested reports whether c's queue is at least half full.
func (h *hub) congested(c *client) bool {
	return 2*c.pendingMsgs.Load() >= int64(h.cfg.queue) ||
		2*c.pendingBytes.Load() >= int64(h.cfg.maxPending) ||
		2*len(c.send) >= cap(c.send)
}

// drop counts n messages of size bytes skipped for c under --slow=drop.
func (h *hub) drop(c *client, n, size int) {
	r := dropQueueFull
	if c.pendingBytes.Load()+int64(size) > int64(h.cfg.maxPending) {
		r = dropMaxPending
	}
	c.dropped.Add(uint64(n))
	h.m.dropped[r].Add(uint64(n))
	h.dropLog.Warn().Uint64("client_id", c.id).Str("reason", r.String()).
		Int64("queue_len", c.pendingMsgs.Load()).Int64("pending_bytes", c.pendingBytes.Load()).
		Uint64("dropped", c.dropped.Load()).Msg("messages dropped for slow client")
}
