package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"time"
)

// Bounds of a --find-max search.
const (
	benchMaxProbes = 12   // probes in one search, unless benchOptions.maxProbes says otherwise
	benchFirstRate = 1000 // msgs/s of the first probe when --rate is not given
	benchMinRatio  = 0.98 // of the offered rate and of the expected deliveries, for a sustained probe
	benchPrecision = 0.05 // bisection stops when the bounds are this close, relative
)

// sustained reports whether res meets the --find-max criteria: no loss, no
// disconnect, no publisher error, at least benchMinRatio of the offered
// rate published and of the expected deliveries made in the window, and p99
// latency within slo. If not, it says why.
func (res benchResult) sustained(slo time.Duration) (bool, string) {
	sloUs := slo.Microseconds()
	switch {
	case res.DisconnectedSubs > 0:
		return false, fmt.Sprintf("%d of %d subscribers disconnected", res.DisconnectedSubs, res.Subs)
	case res.PublisherErrors > 0:
		return false, res.Error
	case res.Lost > 0:
		return false, fmt.Sprintf("%d lost", res.Lost)
	case res.PublishedMsgsPerS < benchMinRatio*res.Rate:
		return false, fmt.Sprintf("published only %.0f msgs/s", res.PublishedMsgsPerS)
	case res.DeliveryRatio < benchMinRatio:
		return false, fmt.Sprintf("delivered only %.1f%%", 100*res.DeliveryRatio)
	case res.LatencyP99Us > sloUs:
		return false, fmt.Sprintf("p99 %s over the %v slo", benchMicros(res.LatencyP99Us), slo)
	}
	return true, ""
}

// A benchCapacity is the outcome of a --find-max search, as --json prints it.
type benchCapacity struct {
	SLOMs                  float64            `json:"slo_ms"`
	CapacityMsgsPerS       float64            `json:"capacity_msgs_per_s"`       // published; 0 if no probe was sustained
	CapacityDeliveriesPerS float64            `json:"capacity_deliveries_per_s"` // summed over subscribers
	Probes                 []benchProbeResult `json:"probes"`                    // in the order run
	best                   int                // index in Probes of the capacity figure; -1 if none
}

// A benchProbeResult is one run of a --find-max search and its verdict.
type benchProbeResult struct {
	benchResult
	Sustained bool   `json:"sustained"`
	Why       string `json:"why,omitempty"` // why it was not sustained
}

// benchNextRate picks the next offered rate of a search from the highest
// sustained rate lo and the lowest failed one hi (0 when not known yet):
// doubling until a probe fails, then bisecting. It returns 0 when the search
// is over.
func benchNextRate(first, lo, hi float64) float64 {
	var next float64
	switch {
	case hi == 0 && lo == 0:
		return first
	case hi == 0:
		next = 2 * lo
	default:
		if hi-lo <= benchPrecision*hi {
			return 0
		}
		next = math.Round((lo + hi) / 2)
	}
	if next <= lo || (hi > 0 && next >= hi) {
		return 0
	}
	return next
}

// benchFindMax searches the highest offered --rate that is sustained, printing
// one line per probe to stdout unless --json. Each probe is a whole run of
// --warmup plus --duration.
func benchFindMax(ctx context.Context, opts benchOptions, stdout io.Writer) (benchCapacity, error) {
	if err := opts.validate(); err != nil {
		return benchCapacity{}, err
	}
	return benchSearch(ctx, opts, stdout, benchMeasure)
}

// benchSearch is benchFindMax with the probe run by measure.
func benchSearch(ctx context.Context, opts benchOptions, stdout io.Writer,
	measure func(context.Context, benchOptions) (benchResult, error)) (benchCapacity, error) {
	c := benchCapacity{SLOMs: float64(opts.slo) / float64(time.Millisecond), best: -1}
	probes := opts.maxProbes
	if probes == 0 {
		probes = benchMaxProbes
	}
	first := opts.rate
	if first == 0 {
		first = benchFirstRate
	}
	var lo, hi float64
	for i := 0; i < probes; i++ {
		rate := benchNextRate(first, lo, hi)
		if rate == 0 {
			break
		}
		o := opts
		o.rate = rate
		res, err := measure(ctx, o)
		if err != nil {
			return c, err
		}
		ok, why := res.sustained(opts.slo)
		c.Probes = append(c.Probes, benchProbeResult{res, ok, why})
		verdict := "ok"
		if ok {
			lo = rate
			c.best = i
		} else {
			hi = rate
			verdict = "fail: " + why
		}
		if !opts.json {
			if _, err := fmt.Fprintf(stdout, "probe %d/%d: offered %.0f msgs/s: published %.0f msgs/s, delivered %.0f msgs/s, p99 %s: %s\n",
				i+1, probes, rate, res.PublishedMsgsPerS, res.DeliveredMsgsPerS, benchMicros(res.LatencyP99Us), verdict); err != nil {
				return c, err
			}
		}
	}
	if c.best >= 0 {
		c.CapacityMsgsPerS = c.Probes[c.best].PublishedMsgsPerS
		c.CapacityDeliveriesPerS = c.Probes[c.best].DeliveredMsgsPerS
	}
	if opts.json {
		return c, benchWriteJSON(stdout, c)
	}
	note := fmt.Sprintf("at %.0f msgs/s offered", lo)
	if c.best < 0 {
		note = "no probe was sustained"
	}
	_, err := fmt.Fprintf(stdout, "capacity: %.0f msgs/s published, %.0f deliveries/s (%s, p99 slo %v)\n",
		c.CapacityMsgsPerS, c.CapacityDeliveriesPerS, note, opts.slo)
	return c, err
}
