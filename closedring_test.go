package main

import (
	"testing"

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
