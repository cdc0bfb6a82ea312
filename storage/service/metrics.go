package service

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/storage/wire"
	"github.com/emberfs/emberfs/transport"
)

// metrics are per Service (own registry) so tests can run several
// services in one process.
type metrics struct {
	reg            *prometheus.Registry
	requests       *prometheus.CounterVec
	latency        *prometheus.HistogramVec
	readBytes      prometheus.Counter
	writeBytes     prometheus.Counter
	forwardRetries prometheus.Counter
	dedupeHits     prometheus.Counter
	syncs          prometheus.Counter
	repairs        prometheus.Counter
	corruptReads   prometheus.Counter
}

var opNames = map[transport.Op]string{
	wire.OpWrite: "write", wire.OpForward: "forward", wire.OpRead: "read", wire.OpReadBatch: "read_batch",
	wire.OpQueryLast: "query_last", wire.OpRemoveInode: "remove_inode", wire.OpSync: "sync",
	wire.OpSyncDedupe: "sync_dedupe",
	wire.OpKVGet:      "kv_get", wire.OpKVGetBatch: "kv_get_batch", wire.OpKVExists: "kv_exists",
	wire.OpKVStats: "kv_stats", wire.OpKVDrop: "kv_drop",
}

func newMetrics(s *Service) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "emberfs_storage_requests_total", Help: "Data-port requests by opcode and result code."}, []string{"op", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "emberfs_storage_request_seconds", Help: "Data-port request latency by opcode.",
		Buckets: prometheus.ExponentialBuckets(50e-6, 2, 18)}, []string{"op"})
	m.readBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "emberfs_storage_read_bytes_total", Help: "Chunk bytes served to readers."})
	m.writeBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "emberfs_storage_write_bytes_total", Help: "Chunk bytes received in writes and forwards."})
	m.forwardRetries = prometheus.NewCounter(prometheus.CounterOpts{Name: "emberfs_storage_forward_retries_total", Help: "Forward attempts to a successor that failed and were retried."})
	m.dedupeHits = prometheus.NewCounter(prometheus.CounterOpts{Name: "emberfs_storage_dedupe_hits_total", Help: "Retried writes answered from the dedupe table."})
	m.syncs = prometheus.NewCounter(prometheus.CounterOpts{Name: "emberfs_storage_syncs_total", Help: "Successor syncs completed."})
	m.repairs = prometheus.NewCounter(prometheus.CounterOpts{Name: "emberfs_storage_repairs_total", Help: "Corrupt chunks repaired on this node."})
	m.corruptReads = prometheus.NewCounter(prometheus.CounterOpts{Name: "emberfs_storage_corrupt_reads_total", Help: "Reads that found a checksum mismatch."})
	targets := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "emberfs_storage_targets_uptodate", Help: "Targets reported up-to-date."}, func() float64 {
		n := 0
		for _, t := range s.order {
			if t.isRecovered() {
				n++
			}
		}
		return float64(n)
	})
	dedupe := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "emberfs_storage_dedupe_entries", Help: "Client channels in the dedupe table."}, func() float64 { return float64(s.dedupe.size()) })
	m.reg.MustRegister(m.requests, m.latency, m.readBytes, m.writeBytes, m.forwardRetries, m.dedupeHits, m.syncs, m.repairs,
		m.corruptReads, targets, dedupe, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler { return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}) }

// instrument counts and times a handler.
func (s *Service) instrument(op transport.Op, h transport.Handler) transport.Handler {
	name := opNames[op]
	if name == "" {
		name = strconv.Itoa(int(op))
	}
	lat := s.metrics.latency.WithLabelValues(name)
	return func(ctx context.Context, req *transport.ServerRequest) (*transport.ServerResponse, error) {
		start := time.Now()
		if op == wire.OpWrite || op == wire.OpForward || op == wire.OpSync {
			s.metrics.writeBytes.Add(float64(len(req.Payload)))
		}
		resp, err := h(ctx, req)
		lat.Observe(time.Since(start).Seconds())
		s.metrics.requests.WithLabelValues(name, errcode.CodeOf(err).String()).Inc()
		return resp, err
	}
}
