package main

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

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
	fanouts           atomic.Uint64 // batches the hub fanned out
	hubStalls         atomic.Uint64 // times the hub waited for room in a full queue (backpressure)
	hubStallNanos     atomic.Uint64 // and for how long in all
	slowWaitNanos     atomic.Uint64 // of that, waiting on clients then judged slow or spilled: what the stall budget bounds
	spills            atomic.Uint64 // times the hub went on without a client, spilling what it missed (spill.go)
	spillBytes        atomic.Int64  // gauge: what the spill holds, as --spill-buffer counts it
	apiConns          atomic.Int64  // gauge: HTTP API connections open (limitListener)
	apiAccepted       atomic.Uint64 // HTTP API connections accepted
	dropped           [numDropReasons]atomic.Uint64
	closes            [numCloseReasons]atomic.Uint64

	// The web listener (web.go).
	wsClients   atomic.Int64  // gauge: WebSocket clients admitted and not yet finished
	wsUpgrades  atomic.Uint64 // WebSocket handshakes completed, refused clients included
	wsBadOrigin atomic.Uint64 // WebSocket handshakes refused for their Origin
}

// closeReasons returns every reason a client can be closed for, in enum
// order: the label values of echohub_client_closes_total. A reason added to
// the enum is exported without a change here.
func closeReasons() []closeReason {
	rs := make([]closeReason, 0, numCloseReasons-1)
	for r := range numCloseReasons {
		if r != reasonNone {
			rs = append(rs, r)
		}
	}
	return rs
}

// newRegistry returns a private Prometheus registry (never the global one)
// with s's metrics and the Go runtime and process collectors.
func newRegistry(s *server) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		newMetricsCollector(s),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// A metricsCollector exports a server's metrics to Prometheus. It reads the
// atomics at scrape time, so the per-message path stays atomics only: no
// mutex, no map, no Prometheus call.
type metricsCollector struct {
	// Immutable after newMetricsCollector.
	s                 *server
	clients           *prometheus.Desc
	connections       *prometheus.Desc
	messagesReceived  *prometheus.Desc
	bytesReceived     *prometheus.Desc
	messagesDelivered *prometheus.Desc
	bytesDelivered    *prometheus.Desc
	dropped           *prometheus.Desc // label reason: a dropReason
	closes            *prometheus.Desc // label reason: a closeReason
	acceptErrors      *prometheus.Desc
	rateLimited       *prometheus.Desc
	fanouts           *prometheus.Desc
	hubStalls         *prometheus.Desc
	hubStallSeconds   *prometheus.Desc
	slowWaitSeconds   *prometheus.Desc
	spills            *prometheus.Desc
	spillBytes        *prometheus.Desc
	pendingBytes      *prometheus.Desc
	pendingMessages   *prometheus.Desc
	apiConns          *prometheus.Desc
	apiAccepted       *prometheus.Desc
	bp                []*prometheus.Desc // with --backplane only: see collectBackplane
	wsClients         *prometheus.Desc
	wsUpgrades        *prometheus.Desc
	wsBadOrigin       *prometheus.Desc
}

// newMetricsCollector returns the collector of s's metrics.
func newMetricsCollector(s *server) *metricsCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("echohub_"+name, help, labels, nil)
	}
	return &metricsCollector{
		s:                 s,
		clients:           desc("clients", "Clients connected to the hub."),
		connections:       desc("connections_total", "TCP connections accepted, refused ones included."),
		messagesReceived:  desc("messages_received_total", "Complete messages read from clients."),
		bytesReceived:     desc("bytes_received_total", "Bytes of the messages read from clients, framing included."),
		messagesDelivered: desc("messages_delivered_total", "Messages written to client sockets, counted once per receiving client."),
		bytesDelivered:    desc("bytes_delivered_total", "Bytes written to client sockets, notices excluded."),
		dropped:           desc("messages_dropped_total", "Messages skipped for a slow client under --slow=drop, by which queue bound was hit.", "reason"),
		closes:            desc("client_closes_total", "Clients closed, by close reason (server_full, denied, too_many_from_ip: refused at accept).", "reason"),
		acceptErrors:      desc("accept_errors_total", "Temporary accept errors (such as EMFILE), each followed by a backoff."),
		rateLimited:       desc("messages_rate_limited_total", "Messages a reader held back to keep its client under --rate."),
		fanouts:           desc("fanouts_total", "Batches the hub fanned out: messages_received_total over it is the mean batch, each one write per client."),
		hubStalls:         desc("hub_stalls_total", "Times the hub waited for room in a client's full queue, slowing intake (backpressure)."),
		hubStallSeconds:   desc("hub_stall_seconds_total", "Time the hub spent waiting for room in full queues."),
		slowWaitSeconds:   desc("slow_wait_seconds_total", "Of that, time spent on clients then judged slow or gone on without: the stall budget allows one --stall-limit a minute of it to clients that connect meanwhile."),
		spills:            desc("spills_total", "Times the hub went on without a client stuck for --stall-pause, keeping what it missed in the spill."),
		spillBytes:        desc("spill_bytes", "What the spill holds for clients the hub went on without, as --spill-buffer counts it."),
		pendingBytes:      desc("queue_pending_bytes", "Bytes queued for connected clients and not yet written, summed over clients."),
		pendingMessages:   desc("queue_pending_messages", "Messages queued for connected clients and not yet written, summed over clients."),
		apiConns:          desc("api_connections", "Connections open to this HTTP API; at its cap, new ones wait to be accepted."),
		apiAccepted:       desc("api_connections_total", "Connections accepted by this HTTP API."),
		bp:                backplaneDescs(s, desc),
		wsClients:         desc("websocket_clients", "Clients connected over WebSocket (--web-listen); they are counted in echohub_clients too."),
		wsUpgrades:        desc("websocket_upgrades_total", "WebSocket handshakes completed on --web-listen, refused clients included."),
		wsBadOrigin:       desc("websocket_origin_refused_total", "WebSocket handshakes refused because the page's origin is not allowed (--web-origin)."),
	}
}

// Describe implements prometheus.Collector.
func (mc *metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		mc.clients, mc.connections, mc.messagesReceived, mc.bytesReceived, mc.messagesDelivered,
		mc.bytesDelivered, mc.dropped, mc.closes, mc.acceptErrors, mc.rateLimited,
		mc.fanouts, mc.hubStalls, mc.hubStallSeconds, mc.slowWaitSeconds, mc.spills, mc.spillBytes, mc.pendingBytes, mc.pendingMessages, mc.apiConns,
		mc.apiAccepted,
	} {
		ch <- d
	}
	for _, d := range mc.bp {
		ch <- d
	}
	if mc.s.cfg.webListen != "" {
		ch <- mc.wsClients
		ch <- mc.wsUpgrades
		ch <- mc.wsBadOrigin
	}
}

// Collect implements prometheus.Collector. It runs on the scraping request's
// goroutine.
func (mc *metricsCollector) Collect(ch chan<- prometheus.Metric) {
	m := mc.s.m
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	gauge(mc.clients, m.clients.Load())
	counter(mc.connections, m.connections.Load())
	counter(mc.messagesReceived, m.messagesReceived.Load())
	counter(mc.bytesReceived, m.bytesReceived.Load())
	counter(mc.messagesDelivered, m.messagesDelivered.Load())
	counter(mc.bytesDelivered, m.bytesDelivered.Load())
	for r := range numDropReasons {
		counter(mc.dropped, m.dropped[r].Load(), r.String())
	}
	for _, r := range closeReasons() {
		counter(mc.closes, m.closes[r].Load(), r.String())
	}
	counter(mc.acceptErrors, m.acceptErrors.Load())
	counter(mc.rateLimited, m.rateLimited.Load())
	counter(mc.fanouts, m.fanouts.Load())
	counter(mc.hubStalls, m.hubStalls.Load())
	ch <- prometheus.MustNewConstMetric(mc.hubStallSeconds, prometheus.CounterValue, float64(m.hubStallNanos.Load())/1e9)
	ch <- prometheus.MustNewConstMetric(mc.slowWaitSeconds, prometheus.CounterValue, float64(m.slowWaitNanos.Load())/1e9)
	counter(mc.spills, m.spills.Load())
	gauge(mc.spillBytes, m.spillBytes.Load())
	msgs, bytes := mc.s.pending()
	gauge(mc.pendingMessages, msgs)
	gauge(mc.pendingBytes, bytes)
	gauge(mc.apiConns, m.apiConns.Load())
	counter(mc.apiAccepted, m.apiAccepted.Load())
	mc.collectBackplane(ch)
	if mc.s.cfg.webListen != "" { // the WebSocket metrics exist only with the web listener
		gauge(mc.wsClients, m.wsClients.Load())
		counter(mc.wsUpgrades, m.wsUpgrades.Load())
		counter(mc.wsBadOrigin, m.wsBadOrigin.Load())
	}
}

// pending returns how many messages and bytes are queued for s's connected
// clients, summed. It takes s.mu: scrape time only, never per message.
func (s *server) pending() (msgs, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		msgs += c.pendingMsgs.Load()
		bytes += c.pendingBytes.Load()
	}
	return msgs, bytes
}
