package main

import "sync/atomic"

// dropReason says why a message was skipped for one client in --slow=drop mode.
type dropReason int

const (
	dropQueueFull  dropReason = iota // the client's queue held --queue messages
	dropMaxPending                   // the client's queue held --max-pending bytes
	numDropReasons
)

var dropNames = [numDropReasons]string{dropQueueFull: "queue_full", dropMaxPending: "max_pending"}

func (r dropReason) String() string { return dropNames[r] }

// metrics are the server's counters. Each is updated with atomics by the
// goroutine that sees the event (reader, writer, hub or accept loop), once per
// batch rather than per message, so counting costs nothing measurable.
type metrics struct {
	clients           atomic.Int64  // gauge: clients registered with the hub
	connections       atomic.Uint64 // connections accepted, refused ones included
	messagesReceived  atomic.Uint64 // complete messages read from clients
	bytesReceived     atomic.Uint64
	messagesDelivered atomic.Uint64 // messages written to client sockets
	bytesDelivered    atomic.Uint64
	acceptErrors      atomic.Uint64 // temporary accept errors (EMFILE, ...)
	rateLimited       atomic.Uint64 // messages a reader held back to keep its client under --rate
	dropped           [numDropReasons]atomic.Uint64
	closes            [numCloseReasons]atomic.Uint64
}
