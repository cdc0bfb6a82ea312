package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/emberfs/emberfs/fuse"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
)

// labeledGatherer is one role's registry inside a process that serves
// several roles on one /metrics (emberfs up): its series get labels (role,
// node) that keep them apart, and only one member contributes the go_* and
// process_* runtime series, which all registries of one process share.
type labeledGatherer struct {
	g       prometheus.Gatherer
	labels  map[string]string
	runtime bool
}

// mergedGatherer gathers its members on each scrape, so a member that is
// replaced (a restarted storage service) is picked up through get.
type mergedGatherer struct{ get func() []labeledGatherer }

func (m mergedGatherer) Gather() ([]*dto.MetricFamily, error) {
	byName := map[string]*dto.MetricFamily{}
	for _, lg := range m.get() {
		fams, err := lg.g.Gather()
		if err != nil {
			return nil, err
		}
		for _, f := range fams {
			name := f.GetName()
			if !lg.runtime && (strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_")) {
				continue
			}
			out := byName[name]
			if out == nil {
				out = &dto.MetricFamily{Name: f.Name, Help: f.Help, Type: f.Type, Unit: f.Unit}
				byName[name] = out
			}
			for _, mt := range f.Metric {
				mt = proto.Clone(mt).(*dto.Metric)
				keys := make([]string, 0, len(lg.labels))
				for k := range lg.labels {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					mt.Label = append(mt.Label, &dto.LabelPair{Name: proto.String(k), Value: proto.String(lg.labels[k])})
				}
				sort.Slice(mt.Label, func(i, j int) bool { return mt.Label[i].GetName() < mt.Label[j].GetName() })
				out.Metric = append(out.Metric, mt)
			}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]*dto.MetricFamily, len(names))
	for i, n := range names {
		out[i] = byName[n]
	}
	return out, nil
}

// serveMetrics serves g on http://addr/metrics until ctx ends; it returns
// the bound address (addr may have port 0).
func serveMetrics(ctx context.Context, addr string, g prometheus.Gatherer) (string, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("metrics listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return lis.Addr().String(), nil
}

// mountMetrics counts what a FUSE mount asks of the native client's files:
// operations and their latency, bytes read and written, open files. The
// namespace calls are counted by the meta servers.
type mountMetrics struct {
	reg        *prometheus.Registry
	ops        *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	readBytes  prometheus.Counter
	writeBytes prometheus.Counter
	open       prometheus.Gauge
}

func newMountMetrics(runtime bool) *mountMetrics {
	m := &mountMetrics{reg: prometheus.NewRegistry()}
	m.ops = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "emberfs_mount_ops_total", Help: "File operations of the mount by operation and result (ok or the errno name)."}, []string{"op", "result"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "emberfs_mount_op_seconds", Help: "File operation latency of the mount by operation.",
		Buckets: prometheus.ExponentialBuckets(50e-6, 2, 18)}, []string{"op"})
	m.readBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "emberfs_mount_read_bytes_total", Help: "Bytes read through the mount."})
	m.writeBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "emberfs_mount_write_bytes_total", Help: "Bytes written through the mount."})
	m.open = prometheus.NewGauge(prometheus.GaugeOpts{Name: "emberfs_mount_open_files", Help: "Files the mount holds open."})
	m.reg.MustRegister(m.ops, m.latency, m.readBytes, m.writeBytes, m.open)
	if runtime {
		m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return m
}

func (m *mountMetrics) observe(op string, start time.Time, err error) {
	res := "ok"
	if err != nil {
		res = errnoName(err)
	}
	m.ops.WithLabelValues(op, res).Inc()
	m.latency.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

// instrumentedBackend wraps a mount's backend with mountMetrics.
type instrumentedBackend struct {
	fuse.Backend
	m *mountMetrics
}

func (b instrumentedBackend) Open(ctx context.Context, u meta.User, p meta.PathAt, flags int, mode uint32) (fuse.File, error) {
	start := time.Now()
	f, err := b.Backend.Open(ctx, u, p, flags, mode)
	b.m.observe("open", start, err)
	if err != nil {
		return nil, err
	}
	b.m.open.Inc()
	return &instrumentedFile{File: f, m: b.m}, nil
}

type instrumentedFile struct {
	fuse.File
	m      *mountMetrics
	closed sync.Once
}

func (f *instrumentedFile) ReadAt(p []byte, off int64) (int, error) {
	start := time.Now()
	n, err := f.File.ReadAt(p, off)
	f.m.readBytes.Add(float64(n))
	if isEOF(err) {
		f.m.observe("read", start, nil)
	} else {
		f.m.observe("read", start, err)
	}
	return n, err
}

func (f *instrumentedFile) WriteAt(p []byte, off int64) (int, error) {
	start := time.Now()
	n, err := f.File.WriteAt(p, off)
	f.m.writeBytes.Add(float64(n))
	f.m.observe("write", start, err)
	return n, err
}

func (f *instrumentedFile) Flush() error {
	start := time.Now()
	err := f.File.Flush()
	f.m.observe("flush", start, err)
	return err
}

func (f *instrumentedFile) Sync() error {
	start := time.Now()
	err := f.File.Sync()
	f.m.observe("fsync", start, err)
	return err
}

func (f *instrumentedFile) Truncate(size int64) error {
	start := time.Now()
	err := f.File.Truncate(size)
	f.m.observe("truncate", start, err)
	return err
}

func (f *instrumentedFile) Close() error {
	start := time.Now()
	err := f.File.Close()
	f.m.observe("close", start, err)
	f.closed.Do(func() { f.m.open.Dec() })
	return err
}

// errnoName labels a failed operation with its EmberFS error code, as the
// meta and storage request counters do.
func errnoName(err error) string { return errcode.CodeOf(err).String() }

func isEOF(err error) bool { return errors.Is(err, io.EOF) }
