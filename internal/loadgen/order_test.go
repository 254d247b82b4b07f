package loadgen

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestNodesOneHub: one hub behind three addresses is one order, whichever
// address each connection uses.
func TestNodesOneHub(t *testing.T) {
	t.Parallel()
	h := newFakeHub(t, Line, 0)
	opts := testOptions(strings.Join([]string{h.listen(t, nil), h.listen(t, nil), h.listen(t, nil)}, ","), Line)
	opts.Subs, opts.Pubs, opts.Duration, opts.Warmup = 6, 3, 500*time.Millisecond, 0
	var out bytes.Buffer
	res, err := Run(context.Background(), opts, &out)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkClean(t, res)
	if res.Nodes != 3 || res.DivergentSubs != 0 || res.OrderChecked != res.Published {
		t.Errorf("Run over 3 addresses of one hub: %d nodes, %d divergent subs, order checked over %d of %d messages; want 3, 0, all",
			res.Nodes, res.DivergentSubs, res.OrderChecked, res.Published)
	}
	want := "order        0 of 6 subs diverged from the first subscriber's order"
	if !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "(line, 3 nodes)") {
		t.Errorf("table has no %q and (line, 3 nodes):\n%s", want, out.String())
	}
}

// TestNodesDiverge: two hubs that each deliver their own clients' messages
// at once and the other's later lose nothing, but their subscribers see two
// orders; the subscribers on the second hub are counted as divergent.
func TestNodesDiverge(t *testing.T) {
	t.Parallel()
	a, b := newFakeHub(t, Len32, 0), newFakeHub(t, Len32, 0)
	bridge(a, b, 20*time.Millisecond)
	opts := testOptions(a.listen(t, nil)+","+b.listen(t, nil), Len32)
	opts.Subs, opts.Pubs, opts.Duration, opts.Warmup = 5, 2, 500*time.Millisecond, 0
	opts.JSON = true
	res, err := Run(context.Background(), opts, new(bytes.Buffer))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	// Subscribers 0, 2 and 4 are on a, 1 and 3 on b.
	if res.Lost != 0 || res.DisconnectedSubs != 0 || res.DivergentSubs != 2 || res.OrderChecked != res.Published {
		t.Errorf("Run over two bridged hubs: %d lost, %d disconnected, %d divergent subs over %d of %d messages; want 0, 0, 2, all",
			res.Lost, res.DisconnectedSubs, res.DivergentSubs, res.OrderChecked, res.Published)
	}
	if ok, why := res.sustained(time.Hour); ok || why != "2 subscribers saw another order" {
		t.Errorf("sustained() = %v, %q; want false, 2 subscribers saw another order", ok, why)
	}
}

// TestNodesApart: two hubs that do not talk at all. Each subscriber misses
// the other hub's publisher: that is loss, and no message is left that all
// subscribers received, so there is no order to compare.
func TestNodesApart(t *testing.T) {
	t.Parallel()
	opts := testOptions(startFakeHub(t, Line, nil, 0)+","+startFakeHub(t, Line, nil, 0), Line)
	opts.Subs, opts.Pubs, opts.Duration, opts.Warmup = 2, 2, 300*time.Millisecond, 0
	res, err := Run(context.Background(), opts, new(bytes.Buffer))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Published == 0 || res.Lost != res.Published || res.Received != res.Published || res.DivergentSubs != 0 || res.OrderChecked != 0 {
		t.Errorf("Run over two separate hubs: published %d, lost %d, received %d, %d divergent over %d; want lost = received = published, 0 over 0",
			res.Published, res.Lost, res.Received, res.DivergentSubs, res.OrderChecked)
	}
}

func TestOrderCheck(t *testing.T) {
	// Three subscribers of two publishers, each of which sent 3 messages.
	a0, a1, a2 := orderKey(0, 0), orderKey(0, 1), orderKey(0, 2)
	b0, b1, b2 := orderKey(1, 0), orderKey(1, 1), orderKey(1, 2)
	tests := []struct {
		name      string
		orders    [][]uint64
		gone      int // index of a disconnected subscriber, or -1
		divergent int
		checked   int64
	}{
		{"one order", [][]uint64{{a0, b0, a1, b1}, {a0, b0, a1, b1}, {a0, b0, a1, b1}}, -1, 0, 4},
		{"loss is not divergence", [][]uint64{{a0, b0, a1, b1}, {a0, a1, b1}, {a0, b0, b1}}, -1, 0, 2},
		{"two orders", [][]uint64{{a0, b0, a1, b1}, {b0, a0, a1, b1}, {a0, b0, a1, b1}}, -1, 1, 4},
		{"all differ from the first", [][]uint64{{a2, b2}, {b2, a2}, {b2, a2}}, -1, 2, 2},
		{"a disconnected one is left out", [][]uint64{{a0, b0}, {b0, a0}, {a0, b0}}, 1, 0, 2},
		{"nothing in common", [][]uint64{{a0}, {b0}, {a1}}, -1, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRun(Options{Subs: 3, Pubs: 2, Size: 64, Framing: Line})
			r.pubs = []*publisher{{id: 0, sent: 3}, {id: 1, sent: 3}}
			for i, o := range tt.orders {
				r.subs = append(r.subs, &subscriber{order: o, orderMax: 10, disconnected: i == tt.gone})
			}
			if d, c := r.orderCheck(); d != tt.divergent || c != tt.checked {
				t.Errorf("orderCheck() = %d, %d; want %d, %d", d, c, tt.divergent, tt.checked)
			}
		})
	}
}
