package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestCloseReasons(t *testing.T) {
	rs := closeReasons()
	if len(rs) != int(numCloseReasons)-1 {
		t.Errorf("closeReasons() has %d reasons; want %d, every one but none", len(rs), numCloseReasons-1)
	}
	seen := make(map[string]bool)
	for _, r := range rs {
		if name := r.String(); name == "" || name == "none" || seen[name] {
			t.Errorf("closeReasons(): label %q for reason %d; want a unique name other than none", name, r)
		}
		seen[r.String()] = true
	}
}

// wantMetrics returns the echohub_ samples of a server that has seen no
// traffic, keyed as scrape keys them; every close reason has a zero sample.
func wantMetrics() map[string]float64 {
	want := map[string]float64{
		"echohub_clients":                     0,
		"echohub_connections_total":           0,
		"echohub_messages_received_total":     0,
		"echohub_bytes_received_total":        0,
		"echohub_messages_delivered_total":    0,
		"echohub_bytes_delivered_total":       0,
		"echohub_accept_errors_total":         0,
		"echohub_messages_rate_limited_total": 0,
		"echohub_fanouts_total":               0,
		"echohub_hub_stalls_total":            0,
		"echohub_hub_stall_seconds_total":     0,
		"echohub_slow_wait_seconds_total":     0,
		"echohub_spills_total":                0,
		"echohub_spill_bytes":                 0,
		"echohub_queue_pending_bytes":         0,
		"echohub_queue_pending_messages":      0,
	}
	for _, r := range []string{"queue_full", "max_pending"} {
		want[`echohub_messages_dropped_total{reason="`+r+`"}`] = 0
	}
	for _, r := range closeReasons() {
		want[`echohub_client_closes_total{reason="`+r.String()+`"}`] = 0
	}
	return want
}

// waitMetrics waits until /metrics at baseURL shows exactly want. The
// API's own connection metrics change with every scrape: they are only
// checked to count the scrape in progress.
func waitMetrics(t *testing.T, baseURL string, want map[string]float64) {
	t.Helper()
	waitFor(t, 5*time.Second, func() error {
		got, err := scrape(t, baseURL)
		if err != nil {
			return err
		}
		for _, name := range []string{"echohub_api_connections", "echohub_api_connections_total"} {
			if got[name] < 1 {
				return fmt.Errorf("%s = %v; want at least 1, this scrape", name, got[name])
			}
			delete(got, name)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			return fmt.Errorf("/metrics mismatch (-want +got):\n%s", diff)
		}
		return nil
	})
}

// TestMetricsKnownTraffic checks /metrics and /clients against a known
// traffic pattern: alice and bob connected, alice sends three 20-byte lines,
// and mallory is closed for a line over --max-message.
func TestMetricsKnownTraffic(t *testing.T) {
	start := time.Now()
	cfg := testConfig()
	cfg.maxMessage = 100
	cfg.metricsListen = "127.0.0.1:0"
	cfg.clientsShowAddr = true // /clients lists remote addresses
	ts := startTestServer(t, cfg)
	base := startTestAPI(t, ts)
	want := wantMetrics()
	waitMetrics(t, base, want)

	alice, bob := dial(t, ts.addr, "alice"), dial(t, ts.addr, "bob")
	ts.waitClients(t, 2)
	const size = 20
	for i := range 3 { // one read, so one fan-out, each
		alice.send(t, line("alice", i, size))
		expectLine(t, alice, line("alice", i, size))
		expectLine(t, bob, line("alice", i, size))
	}
	mallory := dial(t, ts.addr, "mallory")
	ts.waitClients(t, 3)
	aliceID, bobID, malloryID := ts.serverSide(t, alice).id, ts.serverSide(t, bob).id, ts.serverSide(t, mallory).id
	mallory.send(t, strings.Repeat("x", 101)+"\n")
	expectLine(t, mallory, "echohub: message too long (max 100 bytes); closing\n")
	expectClosed(t, mallory)

	want["echohub_clients"] = 2
	want["echohub_connections_total"] = 3
	want["echohub_messages_received_total"] = 3
	want["echohub_fanouts_total"] = 3
	want["echohub_bytes_received_total"] = 3 * size
	want["echohub_messages_delivered_total"] = 6 // to alice and bob
	want["echohub_bytes_delivered_total"] = 6 * size
	want[`echohub_client_closes_total{reason="message_too_long"}`] = 1
	waitMetrics(t, base, want)

	page := getClients(t, base)
	wantPage := clientsPage{
		Clients: []clientInfo{
			{ID: aliceID, Remote: alice.LocalAddr().String(), Transport: "tcp", MessagesIn: 3, BytesIn: 3 * size, MessagesOut: 3, BytesOut: 3 * size},
			{ID: bobID, Remote: bob.LocalAddr().String(), Transport: "tcp", MessagesOut: 3, BytesOut: 3 * size},
		},
		Closed: []clientInfo{
			{ID: malloryID, Remote: mallory.LocalAddr().String(), Transport: "tcp", Reason: "message_too_long"},
		},
	}
	ignoreTimes := cmpopts.IgnoreFields(clientInfo{}, "ConnectedAt", "ClosedAt")
	if diff := cmp.Diff(wantPage, page, ignoreTimes); diff != "" {
		t.Errorf("/clients mismatch (-want +got):\n%s", diff)
	}
	for _, ci := range append(page.Clients, page.Closed...) {
		connected, err := time.Parse(time.RFC3339Nano, ci.ConnectedAt)
		if err != nil || connected.Before(start) || connected.After(time.Now()) {
			t.Errorf("client %d: connected_at = %q, %v; want an RFC 3339 time during the test", ci.ID, ci.ConnectedAt, err)
		}
		if ci.Reason == "" {
			if ci.ClosedAt != "" {
				t.Errorf("client %d: connected, but closed_at = %q; want none", ci.ID, ci.ClosedAt)
			}
			continue
		}
		if closed, err := time.Parse(time.RFC3339Nano, ci.ClosedAt); err != nil || closed.Before(connected) {
			t.Errorf("client %d: closed_at = %q, %v; want an RFC 3339 time after connected_at %q", ci.ID, ci.ClosedAt, err, ci.ConnectedAt)
		}
	}
}

// TestMetricsDropped: under --slow=drop, the drop counter is what a frozen
// client missed, and the pending gauges sum what is queued for it.
func TestMetricsDropped(t *testing.T) {
	cfg := testConfig()
	cfg.slow = slowDrop
	cfg.queue, cfg.maxPending = 64, 64<<10
	cfg.writeTimeout = time.Minute
	cfg.stallLimit = 2 * time.Second // quicker than the default; pub and alice are goroutines of this busy process
	cfg.spillBuffer = 0              // the hub waits, then drops, as it does once the spill is full
	cfg.metricsListen = "127.0.0.1:0"
	ts := startTestServer(t, cfg)
	base := startTestAPI(t, ts)
	pub, alice := dial(t, ts.addr, "pub"), dial(t, ts.addr, "alice")
	slow := frozen(t, ts.addr)
	ts.waitClients(t, 3)
	sc := ts.serverSide(t, slow)

	const n = frozenFloodLines
	publishPastFrozen(t, pub, alice)
	waitFor(t, 5*time.Second, func() error {
		got, err := scrape(t, base)
		if err != nil {
			return err
		}
		dropped := got[`echohub_messages_dropped_total{reason="queue_full"}`] + got[`echohub_messages_dropped_total{reason="max_pending"}`]
		queued, pending := float64(sc.pendingMsgs.Load()), float64(sc.pendingBytes.Load())
		switch {
		case dropped == 0 || dropped != float64(sc.dropped.Load()):
			return fmt.Errorf("messages dropped = %v; want slow's count %d, and more than 0", dropped, sc.dropped.Load())
		case got["echohub_queue_pending_messages"] != queued || got["echohub_queue_pending_bytes"] != pending:
			return fmt.Errorf("queue pending = %v messages, %v bytes; want slow's %v and %v",
				got["echohub_queue_pending_messages"], got["echohub_queue_pending_bytes"], queued, pending)
		case queued == 0:
			return errors.New("nothing queued for slow")
		case got["echohub_hub_stalls_total"] < 1 || got["echohub_hub_stall_seconds_total"] < cfg.stallLimit.Seconds():
			// The hub waited the stall limit for slow before it dropped.
			return fmt.Errorf("hub stalls = %v, for %vs; want at least 1, for at least %v",
				got["echohub_hub_stalls_total"], got["echohub_hub_stall_seconds_total"], cfg.stallLimit)
		case got["echohub_slow_wait_seconds_total"] <= 0 ||
			got["echohub_slow_wait_seconds_total"] > got["echohub_hub_stall_seconds_total"]:
			// Of that wait, the part on slow, judged slow, is what the stall budget counts.
			return fmt.Errorf("slow wait = %vs; want more than 0, at most the hub's stall time %vs",
				got["echohub_slow_wait_seconds_total"], got["echohub_hub_stall_seconds_total"])
		case dropped+queued+float64(sc.msgsOut.Load()) != n:
			return fmt.Errorf("slow: dropped %v + queued %v + written %d; want %d", dropped, queued, sc.msgsOut.Load(), n)
		}
		return nil
	})
	page := getClients(t, base)
	for _, ci := range page.Clients {
		if ci.ID == sc.id && ci.Dropped == 0 {
			t.Errorf("/clients: slow's dropped = 0; want its drops")
		}
	}
}
