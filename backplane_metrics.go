package main

import "github.com/prometheus/client_golang/prometheus"

// backplaneDescs returns the descriptions of the backplane's metrics, in the
// order collectBackplane sends them, or none without --backplane.
func backplaneDescs(s *server, desc func(name, help string, labels ...string) *prometheus.Desc) []*prometheus.Desc {
	if s.bp == nil {
		return nil
	}
	return []*prometheus.Desc{
		desc("backplane_up", "1 while this node is connected to the backplane's stream and consuming it, 0 while its clients wait."),
		desc("backplane_published_total", "Messages (each one read's worth) this node published to the stream and JetStream acknowledged."),
		desc("backplane_received_total", "Stream messages this node took from the stream and handed to its hub."),
		desc("backplane_lag_messages", "The stream's last sequence minus the last one this node delivered."),
		desc("backplane_lost_total", "Stream messages gone (retention) before this node delivered them."),
		desc("backplane_reconnects_total", "Connections to NATS this node made again after losing one."),
	}
}

// collectBackplane sends the backplane's metrics, if any.
func (mc *metricsCollector) collectBackplane(ch chan<- prometheus.Metric) {
	b := mc.s.bp
	if b == nil {
		return
	}
	up := 0.0
	if b.up.Load() {
		up = 1
	}
	d := mc.bp
	ch <- prometheus.MustNewConstMetric(d[0], prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(d[1], prometheus.CounterValue, float64(b.published.Load()))
	ch <- prometheus.MustNewConstMetric(d[2], prometheus.CounterValue, float64(b.received.Load()))
	ch <- prometheus.MustNewConstMetric(d[3], prometheus.GaugeValue, float64(b.lag()))
	ch <- prometheus.MustNewConstMetric(d[4], prometheus.CounterValue, float64(b.lost.Load()))
	ch <- prometheus.MustNewConstMetric(d[5], prometheus.CounterValue, float64(b.reconnects.Load()))
}
