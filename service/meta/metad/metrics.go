package metad

import (
	"context"
	"log/slog"
	"net/http"
	"path"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/emberfs/emberfs/internal/errcode"
)

// metrics are per daemon (a registry of their own), so that several
// daemons can run in one test process.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	inFlight prometheus.Gauge
}

// MetricsGatherer is this daemon's metrics, for a process that serves
// several roles on one /metrics (emberfs up).
func (d *Daemon) MetricsGatherer() prometheus.Gatherer { return d.mreg }

func newMetrics(leaseValid func() float64) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "emberfs_meta_requests_total",
			Help: "Meta RPCs served, by method and EmberFS error code (ok on success).",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "emberfs_meta_request_seconds",
			Help:    "Meta RPC latency by method.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16),
		}, []string{"method"}),
	}
	m.inFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "emberfs_meta_requests_in_flight",
		Help: "Meta RPCs being served now (the server's queue depth).",
	})
	m.reg.MustRegister(m.requests, m.latency, m.inFlight,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "emberfs_meta_mgmtd_lease_valid",
			Help: "1 while mgmtd accepts this server's heartbeats.",
		}, leaseValid),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler { return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}) }

// intercept counts and times every call and logs internal errors (bugs or
// a failing KV), which no client caused.
func (m *metrics) intercept(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		m.inFlight.Inc()
		resp, err := handler(ctx, req)
		m.inFlight.Dec()
		method := path.Base(info.FullMethod)
		code := "ok"
		if err != nil {
			c := errcode.CodeOf(errcode.FromGRPC(err))
			code = c.String()
			if c == errcode.Internal {
				log.Error("meta call failed", "method", method, "err", err)
			}
		}
		m.requests.WithLabelValues(method, code).Inc()
		m.latency.WithLabelValues(method).Observe(time.Since(start).Seconds())
		return resp, err
	}
}
