package main

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestRefusalStorm: a connect storm against --deny writes a bounded number
// of log lines (once, 54,000 lines in 3 s), and what it leaves out is counted
// in "refusals suppressed" lines, so every refusal is accounted for.
func TestRefusalStorm(t *testing.T) {
	const storm, dialers = 3000, 8
	cfg := testConfig()
	cfg.deny = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	ts := startTestServer(t, cfg)

	start := time.Now()
	var wg sync.WaitGroup
	for w := range dialers {
		wg.Go(func() {
			for i := w; i < storm; i += dialers {
				c, err := net.DialTimeout("tcp", ts.addr, ioTimeout)
				if err != nil {
					t.Errorf("dial %d: %v", i, err)
					return
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	waitFor(t, 10*time.Second, func() error {
		if got := ts.closes(reasonDenied); got != storm {
			return fmt.Errorf("closes{denied} = %d; want %d", got, storm)
		}
		return nil
	})
	periods := int(time.Since(start)/refusalPeriod) + 2 // a partial period at each end

	// The last count is reported within a period of the last refusal.
	var logged, reports int
	waitFor(t, 3*refusalPeriod, func() error {
		logged = len(ts.logs.entries(t, "client refused"))
		reports = 0
		suppressed := 0.0
		for _, e := range ts.logs.entries(t, "refusals suppressed") {
			if e["reason"] != "denied" || e["level"] != "warn" {
				return fmt.Errorf("refusals suppressed: %v; want reason denied at warn", e)
			}
			suppressed += e["suppressed"].(float64)
			reports++
		}
		if logged+int(suppressed) != storm {
			return fmt.Errorf("%d refusals logged + %v suppressed; want %d in all", logged, suppressed, storm)
		}
		return nil
	})
	if max := refusalBurst * periods; logged > max {
		t.Errorf("%d \"client refused\" lines in %d periods; want at most %d", logged, periods, max)
	}
	if reports > periods {
		t.Errorf("%d \"refusals suppressed\" lines in %d periods; want at most one per period", reports, periods)
	}
	t.Logf("%d refusals in %d periods: %d lines logged, %d reports", storm, periods, logged, reports)
}
