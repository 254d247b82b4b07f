package loadgen

import (
	"testing"
	"time"
)

func TestPacer(t *testing.T) {
	// Counts only: a fake clock steps through one second in uneven steps.
	const rate, pubs = 10000.0, 3
	pacers := newPacers(rate, pubs, 0)
	end := int64(time.Second)
	var total uint64
	for i, p := range pacers {
		var sent uint64
		wakes := 0
		for now := p.start; now < end; wakes++ {
			due := p.due(now, end)
			if due < sent {
				t.Fatalf("pacer %d: due(%d) = %d, below the %d already sent", i, now, due, sent)
			}
			sent = due
			next := p.wake(sent, now)
			if next < now+int64(minPause) {
				t.Fatalf("pacer %d: wake(%d, %d) = %d, sooner than minPause", i, sent, now, next)
			}
			now = next + int64(i+1)*7919 // late by a few µs, differently per publisher
		}
		if wakes > int(time.Second/minPause) {
			t.Errorf("pacer %d woke %d times in 1s; want at most one batch per %v", i, wakes, minPause)
		}
		total += sent
	}
	if total != rate {
		t.Errorf("%d publishers sent %d messages in 1s at --rate %v; want %v", pubs, total, rate, rate)
	}
}
