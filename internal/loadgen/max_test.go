package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestFindMax(t *testing.T) {
	t.Parallel()
	// Through real runs: the wiring only, since a loaded test machine makes
	// any verdict possible.
	opts := testOptions(startFakeHub(t, Line, nil, 0), Line)
	opts.Duration, opts.Warmup, opts.Rate, opts.MaxProbes = 200*time.Millisecond, 50*time.Millisecond, 500, 2
	var out bytes.Buffer
	if _, err := FindMax(context.Background(), opts, &out); err != nil {
		t.Fatalf("FindMax: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "probe 1/2: offered 500 msgs/s: published ") ||
		!strings.HasPrefix(lines[1], "probe 2/2: offered ") || !strings.HasPrefix(lines[2], "capacity: ") {
		t.Fatalf("FindMax printed:\n%s\nwant two probes and the capacity", out.String())
	}
}

func TestSearch(t *testing.T) {
	// A simulated hub sustains up to 1700 msgs/s, with p99 growing with the rate.
	measure := func(_ context.Context, o Options) (Result, error) {
		res := Result{Rate: o.Rate, Subs: o.Subs, PublishedMsgsPerS: o.Rate, DeliveryRatio: 1,
			DeliveredMsgsPerS: o.Rate * float64(o.Subs), LatencyP99Us: int64(o.Rate)}
		if o.Rate > 1700 {
			res.Lost = 1
		}
		return res, nil
	}
	tests := []struct {
		name   string
		first  float64
		slo    time.Duration
		probes int
		rates  []float64 // offered by each probe
		want   float64   // capacity, msgs/s
	}{
		{"loss bounds it", 0, time.Second, 12, []float64{1000, 2000, 1500, 1750, 1625, 1688}, 1688},
		{"slo bounds it", 0, 1200 * time.Microsecond, 12, []float64{1000, 2000, 1500, 1250, 1125, 1188}, 1188},
		{"probe budget", 0, time.Second, 3, []float64{1000, 2000, 1500}, 1500},
		{"first probe fails", 4000, time.Second, 4, []float64{4000, 2000, 1000, 1500}, 1500},
		{"nothing sustained", 4000, time.Microsecond, 2, []float64{4000, 2000}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := Options{Subs: 3, Rate: tt.first, SLO: tt.slo, MaxProbes: tt.probes}
			var out bytes.Buffer
			c, err := search(context.Background(), opts, &out, measure)
			if err != nil {
				t.Fatal(err)
			}
			var rates []float64
			for _, p := range c.Probes {
				rates = append(rates, p.Rate)
			}
			if diff := cmp.Diff(tt.rates, rates); diff != "" {
				t.Errorf("offered rates (-want +got):\n%s", diff)
			}
			if c.CapacityMsgsPerS != tt.want || c.CapacityDeliveriesPerS != 3*tt.want {
				t.Errorf("capacity %v msgs/s, %v deliveries/s; want %v, %v", c.CapacityMsgsPerS, c.CapacityDeliveriesPerS, tt.want, 3*tt.want)
			}
			last := fmt.Sprintf("capacity: %.0f msgs/s published, %.0f deliveries/s", tt.want, 3*tt.want)
			if !strings.Contains(out.String(), last) || strings.Count(out.String(), "\nprobe ") != len(tt.rates)-1 {
				t.Errorf("search printed:\n%s\nwant %d probe lines and %q", out.String(), len(tt.rates), last)
			}
		})
	}
}

func TestSearchJSON(t *testing.T) {
	measure := func(_ context.Context, o Options) (Result, error) {
		return Result{Rate: o.Rate, PublishedMsgsPerS: o.Rate, DeliveredMsgsPerS: 2 * o.Rate, DeliveryRatio: 1}, nil
	}
	opts := Options{Subs: 2, Rate: 100, SLO: time.Second, MaxProbes: 2, JSON: true}
	var out bytes.Buffer
	if _, err := search(context.Background(), opts, &out, measure); err != nil {
		t.Fatal(err)
	}
	var got struct {
		SLOMs    float64 `json:"slo_ms"`
		Capacity float64 `json:"capacity_msgs_per_s"`
		Probes   []struct {
			Rate      float64 `json:"rate"`
			Published float64 `json:"published_msgs_per_s"`
			Sustained bool    `json:"sustained"`
		} `json:"probes"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("--find-max --json output %q: %v", out.String(), err)
	}
	if got.SLOMs != 1000 || got.Capacity != 200 || len(got.Probes) != 2 || !got.Probes[1].Sustained || got.Probes[1].Published != 200 {
		t.Errorf("--find-max --json output %s; want 2 sustained probes at 100 and 200 msgs/s", out.String())
	}
}

func TestNextRate(t *testing.T) {
	tests := []struct {
		name         string
		lo, hi, want float64
	}{
		{"first", 0, 0, 1000},
		{"double", 4000, 0, 8000},
		{"bisect", 4000, 8000, 6000},
		{"first failed", 0, 1000, 500},
		{"close enough", 9600, 10000, 0},
		{"nothing left", 0, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nextRate(1000, tt.lo, tt.hi); got != tt.want {
				t.Errorf("nextRate(1000, %v, %v) = %v; want %v", tt.lo, tt.hi, got, tt.want)
			}
		})
	}
}
