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
	inFlight       prometheus.Gauge
}

// MetricsGatherer is this service's metrics, for a process that serves
// several roles on one /metrics (emberfs up).
func (s *Service) MetricsGatherer() prometheus.Gatherer { return s.metrics.reg }

// targetCollector reports each target's chunk engine space and state at
// scrape time (no bookkeeping on the data path).
type targetCollector struct {
	s                                            *Service
	chunks, chunkBytes, free, capacity, upToDate *prometheus.Desc
}

func newTargetCollector(s *Service) *targetCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, []string{"target"}, nil)
	}
	return &targetCollector{s: s,
		chunks:     d("emberfs_storage_target_chunks", "Chunks with a committed version on the target (chunk engine)."),
		chunkBytes: d("emberfs_storage_target_chunk_bytes", "Sum of committed chunk lengths on the target (chunk engine)."),
		free:       d("emberfs_storage_target_free_bytes", "Bytes available to the target's chunk engine."),
		capacity:   d("emberfs_storage_target_capacity_bytes", "Bytes of the file system holding the target."),
		upToDate:   d("emberfs_storage_target_uptodate", "1 when the target holds all committed data of its chain (local state up-to-date), 0 while it recovers."),
	}
}

func (c *targetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.chunks
	ch <- c.chunkBytes
	ch <- c.free
	ch <- c.capacity
	ch <- c.upToDate
}

func (c *targetCollector) Collect(ch chan<- prometheus.Metric) {
	for _, t := range c.s.order {
		id := strconv.FormatUint(t.id, 10)
		up := 0.0
		if t.isRecovered() {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(c.upToDate, prometheus.GaugeValue, up, id)
		si, err := t.eng.SpaceInfo()
		if err != nil {
			continue // a failing disk shows in the logs and the repair counters
		}
		ch <- prometheus.MustNewConstMetric(c.chunks, prometheus.GaugeValue, float64(si.Chunks), id)
		ch <- prometheus.MustNewConstMetric(c.chunkBytes, prometheus.GaugeValue, float64(si.ChunkBytes), id)
		ch <- prometheus.MustNewConstMetric(c.free, prometheus.GaugeValue, float64(si.Free), id)
		ch <- prometheus.MustNewConstMetric(c.capacity, prometheus.GaugeValue, float64(si.Capacity), id)
	}
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
	m.inFlight = prometheus.NewGauge(prometheus.GaugeOpts{Name: "emberfs_storage_requests_in_flight", Help: "Data-port requests being served now (the service's queue depth)."})
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
		m.corruptReads, m.inFlight, targets, dedupe, newTargetCollector(s), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
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
		s.metrics.inFlight.Inc()
		resp, err := h(ctx, req)
		s.metrics.inFlight.Dec()
		lat.Observe(time.Since(start).Seconds())
		s.metrics.requests.WithLabelValues(name, errcode.CodeOf(err).String()).Inc()
		return resp, err
	}
}
