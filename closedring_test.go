package main

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// ids returns the ids of rows, in order.
func ids(rows []clientInfo) []uint64 {
	out := make([]uint64, 0, len(rows))
	for _, ci := range rows {
		out = append(out, ci.ID)
	}
	return out
}

func TestClosedRing(t *testing.T) {
	for _, tc := range []struct {
		name string
		adds int
		want []uint64 // newest first
	}{
		{"empty", 0, []uint64{}},
		{"partial", 2, []uint64{2, 1}},
		{"full", 3, []uint64{3, 2, 1}},
		{"wrapped", 5, []uint64{5, 4, 3}},
		{"wrapped twice", 7, []uint64{7, 6, 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newClosedRing(3)
			for i := 1; i <= tc.adds; i++ {
				r.add(clientInfo{ID: uint64(i)})
			}
			if diff := cmp.Diff(tc.want, ids(r.list())); diff != "" {
				t.Errorf("list() after %d adds (-want +got):\n%s", tc.adds, diff)
			}
		})
	}
}

// TestClosedRingBounded: /clients lists the last closedRingSize closed
// clients, newest first, however many have closed; paged by ?closed_before,
// the same rows come out in the same order.
func TestClosedRingBounded(t *testing.T) {
	cfg := testConfig()
	cfg.metricsListen = "127.0.0.1:0"
	ts := startTestServer(t, cfg)
	base := startTestAPI(t, ts)

	const n = closedRingSize + 5
	for range n {
		c, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	waitCloses := func(want uint64) {
		t.Helper()
		waitFor(t, 10*time.Second, func() error {
			if got := ts.closes(reasonEOF); got != want {
				return fmt.Errorf("closes{eof} = %d; want %d", got, want)
			}
			return nil
		})
	}
	waitCloses(n)
	// Closes finish concurrently, so their order is known only for one
	// that begins after all the others have finished.
	last := dial(t, ts.addr, "last")
	lastID := ts.serverSide(t, last).id
	last.Close()
	waitCloses(n + 1)

	page := getClientsPage(t, fmt.Sprintf("%s/clients?limit=%d", base, clientsMaxLimit))
	if len(page.Clients) != 0 {
		t.Errorf("/clients: %d connected; want 0", len(page.Clients))
	}
	if len(page.Closed) != closedRingSize {
		t.Fatalf("/clients: %d closed; want %d, the ring's size", len(page.Closed), closedRingSize)
	}
	if got := page.Closed[0]; got.ID != lastID || got.Reason != "eof" {
		t.Errorf("/clients: newest closed is %d (%s); want %d (eof), the last one closed", got.ID, got.Reason, lastID)
	}
	seen := make(map[uint64]bool)
	for _, ci := range page.Closed {
		if seen[ci.ID] || ci.ID < 1 || ci.ID > lastID {
			t.Fatalf("/clients: closed id %d repeated or out of range 1 to %d", ci.ID, lastID)
		}
		seen[ci.ID] = true
	}
	if page.NextClosedBefore != 0 {
		t.Errorf("/clients?limit=%d: next_closed_before = %d; want none, the ring is listed whole", clientsMaxLimit, page.NextClosedBefore)
	}

	var paged []clientInfo
	var cursor uint64
	for range closedRingSize/100 + 1 {
		p := getClientsPage(t, fmt.Sprintf("%s/clients?limit=100&closed_before=%d", base, cursor))
		paged = append(paged, p.Closed...)
		if cursor = p.NextClosedBefore; cursor == 0 {
			break
		}
	}
	if diff := cmp.Diff(ids(page.Closed), ids(paged)); diff != "" {
		t.Errorf("/clients paged by 100 (-whole +paged):\n%s", diff)
	}
}
