package etcdkv

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/emberfs/emberfs/service/kv"
)

// commit sends the transaction as one etcd Txn:
//
//	If:   every key read (Get, GetRange results, AddReadConflictKey) still
//	      has the mod revision it had at rev (0 for an absent key), every
//	      range read has no key with a mod revision above rev, and no
//	      write-conflict marker of a read key or range was touched after rev
//	Then: the buffered deletes, range deletes, puts and marker puts
//
// A failed compare is kv.ErrConflict. A transaction that only reads commits
// nothing: it is serializable at rev.
func (e *Engine) commit(ctx context.Context, t *tx) error {
	if len(t.writes) == 0 && len(t.cleared) == 0 && len(t.writeConflict) == 0 {
		return nil
	}
	if t.rev != 0 && time.Since(t.started) > maxAttemptAge {
		return fmt.Errorf("%w: etcdkv: transaction ran for %v, over the %v limit for one attempt", kv.ErrTransient, time.Since(t.started).Round(time.Millisecond), maxAttemptAge)
	}
	cmps := t.compares()
	ops, err := t.ops()
	if err != nil {
		return err
	}
	if err := e.checkLimits(cmps, ops); err != nil {
		return err
	}
	resp, err := e.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return e.commitError(ctx, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: etcdkv: a key read at revision %d changed before commit", kv.ErrConflict, t.rev)
	}
	return nil
}

func (t *tx) compares() []clientv3.Cmp {
	if t.rev == 0 {
		return nil // nothing was read
	}
	cmps := make([]clientv3.Cmp, 0, 2*len(t.observed)+2*len(t.ranges))
	keys := make([]string, 0, len(t.observed))
	for k := range t.observed {
		keys = append(keys, k)
	}
	sort.Strings(keys) // deterministic requests are easier to debug
	for _, k := range keys {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(t.full([]byte(k))), "=", t.observed[k]))
	}
	for _, k := range keys {
		if t.markerKey[k] {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(t.marker([]byte(k))), "<", t.rev+1))
		}
	}
	for _, r := range t.ranges {
		// Over a range, a compare holds only if it holds for every key in
		// it (and trivially for an empty range): so an insert or update in
		// the range after rev fails it. A delete is caught by the returned
		// keys' own compares above.
		cmps = append(cmps,
			clientv3.Compare(clientv3.ModRevision(t.fullBegin(r.begin)), "<", t.rev+1).WithRange(t.full(r.end)),
			clientv3.Compare(clientv3.ModRevision(t.marker(r.begin)), "<", t.rev+1).WithRange(t.marker(r.end)))
	}
	return cmps
}

// ops lists the writes. etcd refuses a Txn in which a put's key is also
// deleted (by a point or range delete), so range deletes are split around
// the keys the transaction sets inside them.
func (t *tx) ops() ([]clientv3.Op, error) {
	var puts []string
	var ops []clientv3.Op
	for k, w := range t.writes {
		if !w.deleted {
			puts = append(puts, k)
		}
	}
	sort.Strings(puts)
	for _, s := range mergeSpans(t.cleared) {
		lo := s.begin
		i := sort.SearchStrings(puts, string(s.begin))
		for ; i < len(puts) && puts[i] < string(s.end); i++ {
			if bytes.Compare(lo, []byte(puts[i])) < 0 {
				ops = append(ops, clientv3.OpDelete(t.fullBegin(lo), clientv3.WithRange(t.full([]byte(puts[i])))))
			}
			lo = append([]byte(puts[i]), 0)
		}
		if bytes.Compare(lo, s.end) < 0 {
			ops = append(ops, clientv3.OpDelete(t.fullBegin(lo), clientv3.WithRange(t.full(s.end))))
		}
	}
	dels := make([]string, 0, len(t.writes)-len(puts))
	for k, w := range t.writes {
		if w.deleted {
			dels = append(dels, k)
		}
	}
	sort.Strings(dels)
	for _, k := range dels {
		ops = append(ops, clientv3.OpDelete(t.full([]byte(k))))
	}
	for _, k := range puts {
		ops = append(ops, clientv3.OpPut(t.full([]byte(k)), string(t.writes[k].value)))
	}
	if len(t.writeConflict) > 0 {
		var leaseOpt []clientv3.OpOption
		if id, ok := t.engine.lease.usable(); ok {
			leaseOpt = append(leaseOpt, clientv3.WithLease(id))
		}
		keys := make([]string, 0, len(t.writeConflict))
		for k := range t.writeConflict {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ops = append(ops, clientv3.OpPut(t.marker([]byte(k)), "", leaseOpt...))
		}
	}
	return ops, nil
}

// mergeSpans returns the union of spans as sorted, disjoint spans.
func mergeSpans(spans []span) []span {
	if len(spans) == 0 {
		return nil
	}
	s := append([]span(nil), spans...)
	sort.Slice(s, func(i, j int) bool { return bytes.Compare(s[i].begin, s[j].begin) < 0 })
	out := []span{s[0]}
	for _, x := range s[1:] {
		last := &out[len(out)-1]
		if bytes.Compare(x.begin, last.end) <= 0 {
			if bytes.Compare(x.end, last.end) > 0 {
				last.end = x.end
			}
			continue
		}
		out = append(out, x)
	}
	return out
}

// checkLimits refuses, before sending, a Txn the server would refuse: more
// compares or operations than --max-txn-ops, or a request over
// --max-request-bytes.
func (e *Engine) checkLimits(cmps []clientv3.Cmp, ops []clientv3.Op) error {
	if len(cmps) > e.opts.MaxTxnOps {
		return fmt.Errorf("%w: transaction read %d keys and ranges (%d etcd compares), over the server's limit of %d operations per transaction (etcd --max-txn-ops)", kv.ErrTxnTooLarge, len(cmps)/2, len(cmps), e.opts.MaxTxnOps)
	}
	if len(ops) > e.opts.MaxTxnOps {
		return fmt.Errorf("%w: transaction writes %d keys and ranges, over the server's limit of %d operations per transaction (etcd --max-txn-ops)", kv.ErrTxnTooLarge, len(ops), e.opts.MaxTxnOps)
	}
	size := 0
	for _, c := range cmps {
		pc := c.GetCompare()
		size += len(pc.Key) + len(pc.RangeEnd) + 16
	}
	for _, o := range ops {
		size += len(o.KeyBytes()) + len(o.RangeBytes()) + len(o.ValueBytes()) + 16
	}
	if size > e.opts.MaxRequestBytes {
		return fmt.Errorf("%w: commit request of about %d bytes (reads and writes), over the server's limit of %d bytes (etcd --max-request-bytes)", kv.ErrTxnTooLarge, size, e.opts.MaxRequestBytes)
	}
	return nil
}
