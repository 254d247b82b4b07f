package main

import (
	"math"
	"testing"
)

func TestClientsForFiles(t *testing.T) {
	for _, tc := range []struct {
		name        string
		maxClients  int
		besides     int
		limit       uint64
		want        int
		wantLowered bool
	}{
		{"fits", 10000, 16, 1 << 20, 10000, false},
		{"exactly fits", 48, 16, 64, 48, false},
		{"one over", 49, 16, 64, 48, true},
		{"ulimit 64", 10000, 16, 64, 48, true},
		{"ulimit 64 with the API", 10000, 16 + 32, 64, 16, true},
		{"unlimited clients, limited files", 0, 16, 1024, 1008, true},
		{"unlimited clients and files", 0, 16, math.MaxUint64, 0, false},
		{"RLIM_INFINITY", 10000, 48, math.MaxUint64, 10000, false},
		{"FreeBSD's RLIM_INFINITY", 10000, 48, math.MaxInt64, 10000, false},
		{"past int32", 0, 16, 1 << 40, 0, false},
		{"no room", 10, 48, 48, 0, true},
		{"below the reserve", 10, 48, 20, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, lowered := clientsForFiles(tc.maxClients, tc.besides, tc.limit)
			if got != tc.want || lowered != tc.wantLowered {
				t.Errorf("clientsForFiles(%d, %d, %d) = %d, %v; want %d, %v",
					tc.maxClients, tc.besides, tc.limit, got, lowered, tc.want, tc.wantLowered)
			}
		})
	}
}

func TestFilesBesidesClients(t *testing.T) {
	cfg := defaultConfig()
	if got := cfg.filesBesidesClients(); got != fileReserve {
		t.Errorf("without --metrics-listen: %d; want %d, the reserve", got, fileReserve)
	}
	cfg.metricsListen = "127.0.0.1:9090"
	if got, want := cfg.filesBesidesClients(), fileReserve+cfg.api.maxConns; got != want {
		t.Errorf("with --metrics-listen: %d; want %d, the reserve and the API's connection cap", got, want)
	}
}
