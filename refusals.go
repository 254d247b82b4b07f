package main

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

const (
	// refusalBurst and refusalPeriod sample the "client refused" warnings
	// as the hub samples its drop warnings: at most refusalBurst lines per
	// refusalPeriod (README, Logs).
	refusalBurst  = 5
	refusalPeriod = time.Second
)

// A refusalLog logs the connections the accept loop refuses (denied, too
// many from one IP, server full), sampled, so that a connect storm cannot
// flood the log: one loop against --deny used to write a line per
// connection, 54,000 in 3 s. Past refusalBurst lines in a refusalPeriod,
// refusals are only counted, and run reports the count once per period as
// one "refusals suppressed" warning per reason. Every refusal is still
// counted in echohub_client_closes_total.
type refusalLog struct {
	// Immutable after newRefusalLog.
	log    zerolog.Logger
	burst  int
	period time.Duration

	// Owned by the accept loop (server.refuse).
	logged    int       // lines logged in the period ending at periodEnd
	periodEnd time.Time //

	// Accessed atomically: the accept loop adds, run takes.
	suppressed [numCloseReasons]atomic.Uint64
}

// newRefusalLog returns a refusal log writing to log.
func newRefusalLog(log zerolog.Logger) *refusalLog {
	return &refusalLog{log: log, burst: refusalBurst, period: refusalPeriod}
}

// refused logs, or counts as suppressed, the refusal of a connection from
// remote for reason r. Only the accept loop calls it.
func (l *refusalLog) refused(remote net.Addr, r closeReason) {
	if now := time.Now(); now.After(l.periodEnd) {
		l.periodEnd, l.logged = now.Add(l.period), 0
	}
	if l.logged >= l.burst {
		l.suppressed[r].Add(1)
		return
	}
	l.logged++
	l.log.WithLevel(r.level()).Str("remote", remote.String()).Str("reason", r.String()).Msg("client refused")
}

// run reports the refusals suppressed since its last report, every period,
// until stop is closed, and then once more. Serve runs it beside the accept
// loop; it returns after the accept loop has returned and stop is closed, so
// nothing is logged after Serve returns.
func (l *refusalLog) run(stop <-chan struct{}) {
	t := time.NewTicker(l.period)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case now := <-t.C:
			l.report(now.Sub(last))
			last = now
		case <-stop:
			l.report(time.Since(last))
			return
		}
	}
}

// report logs one warning per reason with refusals suppressed, with their
// count and the time they were counted over, and starts the counts afresh.
func (l *refusalLog) report(dur time.Duration) {
	for r := range numCloseReasons {
		if n := l.suppressed[r].Swap(0); n > 0 {
			l.log.WithLevel(r.level()).Str("reason", r.String()).Uint64("suppressed", n).Dur("dur", dur).
				Msg("refusals suppressed")
		}
	}
}
