package mgmtd

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are per Server (own registry), so several instances can run in
// one process, as the failover tests do.
type metrics struct {
	reg            *prometheus.Registry
	isPrimary      prometheus.Gauge
	routingVersion prometheus.Gauge
	heartbeats     prometheus.Counter
	chainChanges   prometheus.Counter
	nodes          *prometheus.GaugeVec
	targets        *prometheus.GaugeVec
}

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.isPrimary = prometheus.NewGauge(prometheus.GaugeOpts{Name: "emberfs_mgmtd_is_primary", Help: "1 while this instance is the primary."})
	m.routingVersion = prometheus.NewGauge(prometheus.GaugeOpts{Name: "emberfs_mgmtd_routing_version", Help: "Current routing info version."})
	m.heartbeats = prometheus.NewCounter(prometheus.CounterOpts{Name: "emberfs_mgmtd_heartbeats_total", Help: "Heartbeats accepted."})
	m.chainChanges = prometheus.NewCounter(prometheus.CounterOpts{Name: "emberfs_mgmtd_chain_changes_total", Help: "Chain versions committed."})
	m.nodes = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "emberfs_mgmtd_nodes", Help: "Nodes by status."}, []string{"status"})
	m.targets = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "emberfs_mgmtd_targets", Help: "Targets by public state."}, []string{"state"})
	m.reg.MustRegister(m.isPrimary, m.routingVersion, m.heartbeats, m.chainChanges, m.nodes, m.targets,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// MetricsGatherer is this instance's metrics, for a process that serves
// several roles on one /metrics (emberfs up).
func (s *Server) MetricsGatherer() prometheus.Gatherer { return s.metrics.reg }

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (s *Server) updateGaugesLocked(st *state) {
	m := s.metrics
	m.nodes.Reset()
	for _, n := range st.nodes {
		m.nodes.WithLabelValues(NodeStatusName(n.Status)).Inc()
	}
	m.targets.Reset()
	for _, t := range st.targets {
		m.targets.WithLabelValues(PublicStateName(st.publicState(t))).Inc()
	}
	m.routingVersion.Set(float64(st.version))
}
