package loadgen

import (
	"context"
	"fmt"
	"io"
	"math"
	"time"
)

// Bounds of a --find-max search.
const (
	defaultMaxProbes = 12   // probes in one search, unless Options.MaxProbes says otherwise
	firstRate        = 1000 // msgs/s of the first probe when --rate is not given
	minRatio         = 0.98 // of the offered rate and of the expected deliveries, for a sustained probe
	precision        = 0.05 // bisection stops when the bounds are this close, relative
)

// sustained reports whether res meets the --find-max criteria: no loss, no
// disconnect, no publisher error, one order on all nodes, at least minRatio of the offered
// rate published and of the expected deliveries made in the window, and p99
// latency within slo. If not, it says why.
func (res Result) sustained(slo time.Duration) (bool, string) {
	sloUs := slo.Microseconds()
	switch {
	case res.DisconnectedSubs > 0:
		return false, fmt.Sprintf("%d of %d subscribers disconnected", res.DisconnectedSubs, res.Subs)
	case res.PublisherErrors > 0:
		return false, res.Error
	case res.Lost > 0:
		return false, fmt.Sprintf("%d lost", res.Lost)
	case res.DivergentSubs > 0:
		return false, fmt.Sprintf("%d subscribers saw another order", res.DivergentSubs)
	case res.PublishedMsgsPerS < minRatio*res.Rate:
		return false, fmt.Sprintf("published only %.0f msgs/s", res.PublishedMsgsPerS)
	case res.DeliveryRatio < minRatio:
		return false, fmt.Sprintf("delivered only %.1f%%", 100*res.DeliveryRatio)
	case res.LatencyP99Us > sloUs:
		return false, fmt.Sprintf("p99 %s over the %v slo", micros(res.LatencyP99Us), slo)
	}
	return true, ""
}

// A Capacity is the outcome of a --find-max search, as --json prints it.
type Capacity struct {
	SLOMs                  float64       `json:"slo_ms"`
	CapacityMsgsPerS       float64       `json:"capacity_msgs_per_s"`       // published; 0 if no probe was sustained
	CapacityDeliveriesPerS float64       `json:"capacity_deliveries_per_s"` // summed over subscribers
	Probes                 []ProbeResult `json:"probes"`                    // in the order run
	best                   int           // index in Probes of the capacity figure; -1 if none
}

// A ProbeResult is one run of a --find-max search and its verdict.
type ProbeResult struct {
	Result
	Sustained bool   `json:"sustained"`
	Why       string `json:"why,omitempty"` // why it was not sustained
}

// nextRate picks the next offered rate of a search from the highest
// sustained rate lo and the lowest failed one hi (0 when not known yet):
// doubling until a probe fails, then bisecting. It returns 0 when the search
// is over.
func nextRate(first, lo, hi float64) float64 {
	var next float64
	switch {
	case hi == 0 && lo == 0:
		return first
	case hi == 0:
		next = 2 * lo
	default:
		if hi-lo <= precision*hi {
			return 0
		}
		next = math.Round((lo + hi) / 2)
	}
	if next <= lo || (hi > 0 && next >= hi) {
		return 0
	}
	return next
}

// FindMax searches the highest offered --rate that is sustained, printing
// one line per probe to stdout unless --json. Each probe is a whole run of
// --warmup plus --duration.
func FindMax(ctx context.Context, opts Options, stdout io.Writer) (Capacity, error) {
	if err := opts.Validate(); err != nil {
		return Capacity{}, err
	}
	if opts.SLO <= 0 {
		return Capacity{}, fmt.Errorf("--slo: %v is out of range (want more than 0)", opts.SLO)
	}
	return search(ctx, opts, stdout, measure)
}

// search is FindMax with the probe run by measure.
func search(ctx context.Context, opts Options, stdout io.Writer,
	measure func(context.Context, Options) (Result, error)) (Capacity, error) {
	c := Capacity{SLOMs: float64(opts.SLO) / float64(time.Millisecond), best: -1}
	probes := opts.MaxProbes
	if probes == 0 {
		probes = defaultMaxProbes
	}
	first := opts.Rate
	if first == 0 {
		first = firstRate
	}
	var lo, hi float64
	for i := 0; i < probes; i++ {
		rate := nextRate(first, lo, hi)
		if rate == 0 {
			break
		}
		o := opts
		o.Rate = rate
		res, err := measure(ctx, o)
		if err != nil {
			return c, err
		}
		ok, why := res.sustained(opts.SLO)
		c.Probes = append(c.Probes, ProbeResult{res, ok, why})
		verdict := "ok"
		if ok {
			lo = rate
			c.best = i
		} else {
			hi = rate
			verdict = "fail: " + why
		}
		if !opts.JSON {
			if _, err := fmt.Fprintf(stdout, "probe %d/%d: offered %.0f msgs/s: published %.0f msgs/s, delivered %.0f msgs/s, p99 %s: %s\n",
				i+1, probes, rate, res.PublishedMsgsPerS, res.DeliveredMsgsPerS, micros(res.LatencyP99Us), verdict); err != nil {
				return c, err
			}
		}
	}
	if c.best >= 0 {
		c.CapacityMsgsPerS = c.Probes[c.best].PublishedMsgsPerS
		c.CapacityDeliveriesPerS = c.Probes[c.best].DeliveredMsgsPerS
	}
	if opts.JSON {
		return c, writeJSON(stdout, c)
	}
	note := fmt.Sprintf("at %.0f msgs/s offered", lo)
	if c.best < 0 {
		note = "no probe was sustained"
	}
	_, err := fmt.Fprintf(stdout, "capacity: %.0f msgs/s published, %.0f deliveries/s (%s, p99 slo %v)\n",
		c.CapacityMsgsPerS, c.CapacityDeliveriesPerS, note, opts.SLO)
	return c, err
}
