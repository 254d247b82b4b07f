package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// A Result is the figures of one run, as --json prints them. Rates and
// latencies cover the measurement window only (after --warmup); the counts
// cover the whole run, warmup and drain included.
type Result struct {
	Addr      string  `json:"addr"`
	Target    string  `json:"target"` // tcp, ws, redis or nats
	Nodes     int     `json:"nodes"`  // addresses in Addr
	Framing   string  `json:"framing"`
	TLS       bool    `json:"tls"`
	Subs      int     `json:"subs"`
	Pubs      int     `json:"pubs"`
	Size      int     `json:"size"`       // bytes per message, see msg.go
	Rate      float64 `json:"rate"`       // offered msgs/s over all publishers; 0 = unthrottled
	DurationS float64 `json:"duration_s"` // the measurement window
	WarmupS   float64 `json:"warmup_s"`

	PublishedMsgsPerS float64 `json:"published_msgs_per_s"`
	DeliveredMsgsPerS float64 `json:"delivered_msgs_per_s"` // summed over subscribers
	DeliveredMBPerS   float64 `json:"delivered_mb_per_s"`   // bytes as framed over TCP, 1 MB = 1e6 bytes
	DeliveryRatio     float64 `json:"delivery_ratio"`       // delivered / (published x subs), in the window

	// Latency from the send time in the message to its receipt, over the
	// messages sent in the window. LatencyFrom is "scheduled" with --rate
	// (coordinated-omission corrected) and "written" without.
	LatencyFrom      string `json:"latency_from"`
	LatencyP50Us     int64  `json:"latency_p50_us"`
	LatencyP90Us     int64  `json:"latency_p90_us"`
	LatencyP99Us     int64  `json:"latency_p99_us"`
	LatencyP999Us    int64  `json:"latency_p999_us"`
	LatencyMaxUs     int64  `json:"latency_max_us"`
	LatencySamples   int64  `json:"latency_samples"`
	Published        int64  `json:"published"`           // messages sent in full
	Expected         int64  `json:"expected_deliveries"` // published x subs
	Received         int64  `json:"received_deliveries"` // messages received, duplicates included
	Lost             int64  `json:"lost"`                // never received by a subscriber still connected
	Duplicates       int64  `json:"duplicates"`
	Reordered        int64  `json:"reordered"` // arrived after a later message of the same publisher
	Corrupt          int64  `json:"corrupt"`   // frames neither a probe nor a message of --size
	DisconnectedSubs int    `json:"disconnected_subs"`
	PublisherErrors  int    `json:"publisher_errors"`

	// With several nodes: how many connected subscribers saw the messages
	// that all of them received in another order than the first one did,
	// and how many messages that covers (see order.go). Both 0 on one node.
	DivergentSubs int   `json:"divergent_subs"`
	OrderChecked  int64 `json:"order_checked"`

	Error string `json:"error,omitempty"` // the first disconnect or publisher error
}

// result aggregates what the run's goroutines measured. It runs after close.
func (r *run) result() Result {
	o := r.opts
	nodes := r.target.nodes()
	res := Result{
		Addr: o.Addr, Target: r.target.kind(), Nodes: len(nodes), Framing: o.Framing, TLS: o.TLSConfig != nil,
		Subs: o.Subs, Pubs: o.Pubs, Size: o.Size, Rate: o.Rate,
		DurationS: o.Duration.Seconds(), WarmupS: o.Warmup.Seconds(),
		LatencyFrom: "written",
	}
	if o.Rate > 0 {
		res.LatencyFrom = "scheduled"
	}
	for _, n := range nodes {
		// rediss://, tls:// (NATS) and wss:// ask for TLS without --tls.
		res.TLS = res.TLS || strings.HasPrefix(n, "rediss:") || strings.HasPrefix(n, "tls:") || strings.HasPrefix(n, "wss:")
	}
	if len(nodes) > 1 {
		res.DivergentSubs, res.OrderChecked = r.orderCheck()
	}
	var sent []uint64
	var sentInWindow int64
	for _, p := range r.pubs {
		sent = append(sent, p.sent)
		res.Published += int64(p.sent)
		sentInWindow += int64(p.inWindow)
		if p.err != nil {
			res.PublisherErrors++
			if res.Error == "" {
				res.Error = p.err.Error()
			}
		}
	}
	hist := hdrhistogram.New(1, maxLatency, 3)
	var inWindow int64
	for i, s := range r.subs {
		s.hist.MergeInto(hist)
		inWindow += s.inWindow
		res.Received += s.received
		res.Duplicates += s.duplicates
		res.Reordered += s.reordered
		res.Corrupt += s.corrupt
		if s.disconnected {
			res.DisconnectedSubs++
			if res.Error == "" {
				res.Error = fmt.Sprintf("subscriber %d: %v", i, s.err)
			}
			continue
		}
		for p, n := range sent {
			res.Lost += int64(s.seqs[p].missing(n))
		}
	}
	res.Expected = res.Published * int64(o.Subs)
	secs := o.Duration.Seconds()
	res.PublishedMsgsPerS = round2(float64(sentInWindow) / secs)
	res.DeliveredMsgsPerS = round2(float64(inWindow) / secs)
	res.DeliveredMBPerS = round2(float64(inWindow) * float64(r.wire) / secs / 1e6)
	if sentInWindow > 0 {
		res.DeliveryRatio = math.Round(float64(inWindow)/float64(sentInWindow*int64(o.Subs))*1e4) / 1e4
	}
	res.LatencySamples = hist.TotalCount()
	res.LatencyP50Us = hist.ValueAtQuantile(50)
	res.LatencyP90Us = hist.ValueAtQuantile(90)
	res.LatencyP99Us = hist.ValueAtQuantile(99)
	res.LatencyP999Us = hist.ValueAtQuantile(99.9)
	res.LatencyMaxUs = hist.Max()
	return res
}

// round2 rounds v to two decimals, enough for rates in the report.
func round2(v float64) float64 { return math.Round(v*100) / 100 }

// micros formats a latency in µs as a duration: "85µs", "1.234ms".
func micros(us int64) string { return (time.Duration(us) * time.Microsecond).String() }

// writeTable prints res for people.
func (res Result) writeTable(w io.Writer) error {
	rate := "unthrottled"
	if res.Rate > 0 {
		rate = fmt.Sprintf("%.0f msgs/s offered", res.Rate)
	}
	about := []string{res.Framing}
	if res.Target != kindTCP {
		about = []string{res.Target, res.Framing}
	}
	if res.TLS {
		about = append(about, "tls")
	}
	if res.Nodes > 1 {
		about = append(about, fmt.Sprintf("%d nodes", res.Nodes))
	}
	latency := "none: no message sent in the window was received"
	if res.LatencySamples > 0 {
		latency = fmt.Sprintf("p50 %s, p90 %s, p99 %s, p99.9 %s, max %s (from the %s send time, %d samples)",
			micros(res.LatencyP50Us), micros(res.LatencyP90Us), micros(res.LatencyP99Us),
			micros(res.LatencyP999Us), micros(res.LatencyMaxUs), res.LatencyFrom, res.LatencySamples)
	}
	_, err := fmt.Fprintf(w, `target       %s (%s)
load         %d subs, %d pubs, %d B messages, %s, %v measured after %v warmup
published    %.0f msgs/s
delivered    %.0f msgs/s, %.2f MB/s (%.2f%% of published x subs)
latency      %s
deliveries   %d expected, %d received
errors       %d lost, %d duplicates, %d reordered, %d corrupt, %d/%d subs disconnected, %d publisher errors
`,
		res.Addr, strings.Join(about, ", "),
		res.Subs, res.Pubs, res.Size, rate, seconds(res.DurationS), seconds(res.WarmupS),
		res.PublishedMsgsPerS,
		res.DeliveredMsgsPerS, res.DeliveredMBPerS, 100*res.DeliveryRatio,
		latency,
		res.Expected, res.Received,
		res.Lost, res.Duplicates, res.Reordered, res.Corrupt, res.DisconnectedSubs, res.Subs, res.PublisherErrors)
	if err == nil && res.Nodes > 1 {
		_, err = fmt.Fprintf(w, "order        %d of %d subs diverged from the first subscriber's order, over the %d messages every connected sub received\n",
			res.DivergentSubs, res.Subs-res.DisconnectedSubs, res.OrderChecked)
	}
	if err == nil && res.Error != "" {
		_, err = fmt.Fprintf(w, "first error  %s\n", res.Error)
	}
	return err
}

// seconds turns a JSON duration back into a time.Duration for printing.
func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// writeJSON prints v as one JSON object on one line.
func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
