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

// write is a buffered mutation of one key.
type write struct {
	value   []byte
	deleted bool
}

// span is a half-open user-key range [begin, end).
type span struct{ begin, end []byte }

func (s span) contains(k []byte) bool {
	return bytes.Compare(k, s.begin) >= 0 && bytes.Compare(k, s.end) < 0
}

// tx is one attempt of a transaction. Reads go to etcd at rev, the revision
// of the first read (a linearizable read, so it sees every acknowledged
// commit); writes stay in memory until commit.
type tx struct {
	ctx      context.Context
	engine   *Engine
	readOnly bool
	rev      int64     // read revision; 0 until the first read
	started  time.Time // when rev was taken, for maxAttemptAge

	// Conflict tracking: the commit's compares.
	observed  map[string]int64 // user key -> its mod revision at rev (0: absent)
	markerKey map[string]bool  // user keys whose write-conflict marker must be unchanged
	ranges    []span           // ranges read: no key in them (or their markers) modified after rev

	writes        map[string]*write
	cleared       []span          // ClearRange calls, in order
	writeConflict map[string]bool // AddWriteConflictKey keys
	bytes         int
	err           error // first write error: fails the commit even if fn ignored it
}

func newTx(ctx context.Context, e *Engine, readOnly bool) *tx {
	return &tx{ctx: ctx, engine: e, readOnly: readOnly}
}

func (t *tx) full(k []byte) string { return t.engine.prefix + string(k) }

// fullBegin maps a range start; etcd has no empty key, and no user key
// sorts before "\x00".
func (t *tx) fullBegin(k []byte) string {
	if s := t.full(k); s != "" {
		return s
	}
	return "\x00"
}

// marker is the key whose modification stands for AddWriteConflictKey(k):
// it lives in the prefix's 0xff keyspace, outside every user range.
func (t *tx) marker(k []byte) string { return t.engine.prefix + markerSpace + string(k) }

const markerSpace = "\xffw/"

// ensureRev takes the read revision with a linearizable request if no read
// has taken it yet.
func (t *tx) ensureRev() error {
	if t.rev != 0 {
		return nil
	}
	resp, err := t.engine.cli.Get(t.ctx, t.engine.prefix+"\xffv", clientv3.WithCountOnly())
	if err != nil {
		return t.engine.readError(t.ctx, "take read revision", err)
	}
	t.setRev(resp.Header.Revision)
	return nil
}

func (t *tx) setRev(rev int64) {
	if t.rev == 0 {
		t.rev = rev
		t.started = time.Now()
	}
}

// readOpts pins a read to the transaction's revision once it has one.
func (t *tx) readOpts(opts ...clientv3.OpOption) []clientv3.OpOption {
	if t.rev != 0 {
		opts = append(opts, clientv3.WithRev(t.rev))
	}
	return opts
}

func (t *tx) ReadVersion() uint64 {
	if err := t.ensureRev(); err != nil {
		if t.err == nil {
			t.err = err // fails the commit; ReadVersion has no error to return
		}
		return 0
	}
	return uint64(t.rev)
}

// own reports what the transaction's own writes say about k.
func (t *tx) own(k []byte) (w *write, known bool) {
	if w, ok := t.writes[string(k)]; ok {
		return w, true
	}
	for _, s := range t.cleared {
		if s.contains(k) {
			return &write{deleted: true}, true
		}
	}
	return nil, false
}

func (t *tx) Get(key []byte) ([]byte, bool, error)         { return t.get(key, true) }
func (t *tx) SnapshotGet(key []byte) ([]byte, bool, error) { return t.get(key, false) }

func (t *tx) get(key []byte, track bool) ([]byte, bool, error) {
	if err := kv.CheckKey(key); err != nil {
		return nil, false, err
	}
	if w, ok := t.own(key); ok {
		// Read-your-writes: the value is this transaction's own; as in
		// FoundationDB, such a read adds no conflict.
		if w.deleted {
			return nil, false, nil
		}
		return bytes.Clone(w.value), true, nil
	}
	resp, err := t.engine.cli.Get(t.ctx, t.full(key), t.readOpts()...)
	if err != nil {
		return nil, false, t.engine.readError(t.ctx, "get", err)
	}
	t.setRev(resp.Header.Revision)
	var (
		val    []byte
		found  bool
		modRev int64
	)
	if len(resp.Kvs) > 0 {
		val, found, modRev = resp.Kvs[0].Value, true, resp.Kvs[0].ModRevision
		if val == nil {
			val = []byte{}
		}
	}
	if track && !t.readOnly {
		t.observe(key, modRev)
	}
	return val, found, nil
}

func (t *tx) observe(key []byte, modRev int64) {
	if t.observed == nil {
		t.observed = map[string]int64{}
		t.markerKey = map[string]bool{}
	}
	t.observed[string(key)] = modRev
	t.markerKey[string(key)] = true
}

// rangePage is how many keys one etcd range request returns; a larger scan
// is read in pages at the same revision.
const rangePage = 1000

func (t *tx) GetRange(begin, end []byte, opts kv.RangeOptions) ([]kv.KeyValue, error) {
	if err := checkRange(begin, end); err != nil {
		return nil, err
	}
	if bytes.Compare(begin, end) >= 0 {
		return nil, nil
	}
	own := t.ownIn(begin, end)
	limit := opts.Limit
	if len(own) > 0 {
		limit = 0 // own writes may shadow stored keys: read all, cut after merging
	}
	stored, err := t.scan(begin, end, limit, opts.Reverse)
	if err != nil {
		return nil, err
	}
	out, fromStore := merge(stored, own, t, opts)
	track := !opts.Snapshot && !t.readOnly
	if track {
		for _, s := range fromStore {
			t.observe(s.key, s.modRev)
		}
		// The protected range: all of [begin, end) unless the limit cut the
		// result, then up to and including the last key returned.
		r := span{begin, end}
		if opts.Limit > 0 && len(out) >= opts.Limit {
			last := out[len(out)-1].Key
			if opts.Reverse {
				r.begin = last
			} else {
				r.end = append(bytes.Clone(last), 0)
			}
		}
		t.ranges = append(t.ranges, r)
	}
	return out, nil
}

type storedKV struct {
	key    []byte
	value  []byte
	modRev int64
}

// scan reads [begin, end) from etcd at the read revision, in pages.
func (t *tx) scan(begin, end []byte, limit int, reverse bool) ([]storedKV, error) {
	lo, hi := t.fullBegin(begin), t.full(end)
	var out []storedKV
	for {
		page := rangePage
		if limit > 0 && limit-len(out) < page {
			page = limit - len(out)
		}
		ops := []clientv3.OpOption{clientv3.WithRange(hi), clientv3.WithLimit(int64(page))}
		if reverse {
			ops = append(ops, clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
		}
		resp, err := t.engine.cli.Get(t.ctx, lo, t.readOpts(ops...)...)
		if err != nil {
			return nil, t.engine.readError(t.ctx, "range read", err)
		}
		t.setRev(resp.Header.Revision)
		for _, p := range resp.Kvs {
			v := p.Value
			if v == nil {
				v = []byte{}
			}
			out = append(out, storedKV{key: p.Key[len(t.engine.prefix):], value: v, modRev: p.ModRevision})
		}
		if !resp.More || len(resp.Kvs) == 0 || (limit > 0 && len(out) >= limit) {
			return out, nil
		}
		lastKey := string(resp.Kvs[len(resp.Kvs)-1].Key)
		if reverse {
			hi = lastKey
		} else {
			lo = lastKey + "\x00"
		}
	}
}

// ownIn lists the keys in [begin, end) that the transaction's own writes
// decide, plus whether any cleared range overlaps it.
func (t *tx) ownIn(begin, end []byte) []string {
	var keys []string
	for k := range t.writes {
		if k >= string(begin) && k < string(end) {
			keys = append(keys, k)
		}
	}
	for _, s := range t.cleared {
		if bytes.Compare(s.begin, end) < 0 && bytes.Compare(begin, s.end) < 0 {
			keys = append(keys, "") // marks an overlapping clear; never a user key
			break
		}
	}
	sort.Strings(keys)
	return keys
}

// merge combines stored keys with the transaction's own writes in scan
// order and applies opts.Limit. It also returns the stored entries that
// made it into the result (their reads are what conflicts protect).
func merge(stored []storedKV, ownKeys []string, t *tx, opts kv.RangeOptions) ([]kv.KeyValue, []storedKV) {
	var own []string
	for _, k := range ownKeys {
		if k != "" {
			if w := t.writes[k]; w != nil {
				own = append(own, k)
			}
		}
	}
	if opts.Reverse {
		for i, j := 0, len(own)-1; i < j; i, j = i+1, j-1 {
			own[i], own[j] = own[j], own[i]
		}
	}
	before := func(a, b string) bool {
		if opts.Reverse {
			return a > b
		}
		return a < b
	}
	var out []kv.KeyValue
	var fromStore []storedKV
	full := func() bool { return opts.Limit > 0 && len(out) >= opts.Limit }
	i, j := 0, 0
	for (i < len(stored) || j < len(own)) && !full() {
		if j >= len(own) || (i < len(stored) && before(string(stored[i].key), own[j])) {
			s := stored[i]
			i++
			if len(ownKeys) > 0 && len(t.cleared) > 0 {
				if w, ok := t.own(s.key); ok && w.deleted {
					continue // removed by this transaction's ClearRange
				}
			}
			out = append(out, kv.KeyValue{Key: bytes.Clone(s.key), Value: bytes.Clone(s.value)})
			fromStore = append(fromStore, s)
			continue
		}
		if i < len(stored) && string(stored[i].key) == own[j] {
			i++ // shadowed by this transaction's own write
		}
		if w := t.writes[own[j]]; !w.deleted {
			out = append(out, kv.KeyValue{Key: []byte(own[j]), Value: bytes.Clone(w.value)})
		}
		j++
	}
	return out, fromStore
}

func (t *tx) Set(key, value []byte) error {
	if t.readOnly {
		return kv.ErrReadOnly
	}
	if err := kv.CheckKey(key); err != nil {
		return t.fail(err)
	}
	if err := kv.CheckValue(value); err != nil {
		return t.fail(err)
	}
	v := bytes.Clone(value)
	if v == nil {
		v = []byte{}
	}
	return t.put(key, &write{value: v}, len(key)+len(value))
}

func (t *tx) Clear(key []byte) error {
	if t.readOnly {
		return kv.ErrReadOnly
	}
	if err := kv.CheckKey(key); err != nil {
		return t.fail(err)
	}
	return t.put(key, &write{deleted: true}, len(key))
}

// ClearRange becomes one etcd DeleteRange at commit, which removes every
// key in the range at commit time, including keys inserted by transactions
// that committed after this one's read revision (as FoundationDB does).
func (t *tx) ClearRange(begin, end []byte) error {
	if t.readOnly {
		return kv.ErrReadOnly
	}
	if err := checkRange(begin, end); err != nil {
		return t.fail(err)
	}
	if bytes.Compare(begin, end) >= 0 {
		return nil
	}
	if err := t.count(len(begin) + len(end)); err != nil {
		return err
	}
	s := span{bytes.Clone(begin), bytes.Clone(end)}
	for k := range t.writes {
		if s.contains([]byte(k)) {
			delete(t.writes, k) // the clear supersedes earlier writes in the range
		}
	}
	t.cleared = append(t.cleared, s)
	return nil
}

func (t *tx) AddReadConflictKey(key []byte) error {
	if t.readOnly {
		return kv.ErrReadOnly
	}
	if err := kv.CheckKey(key); err != nil {
		return err
	}
	if _, ok := t.observed[string(key)]; ok {
		return nil
	}
	// Same as Get without returning the value: the key must be unchanged
	// at commit, and so must its write-conflict marker.
	resp, err := t.engine.cli.Get(t.ctx, t.full(key), t.readOpts(clientv3.WithKeysOnly())...)
	if err != nil {
		return t.engine.readError(t.ctx, "read conflict key", err)
	}
	t.setRev(resp.Header.Revision)
	var modRev int64
	if len(resp.Kvs) > 0 {
		modRev = resp.Kvs[0].ModRevision
	}
	t.observe(key, modRev)
	return nil
}

// AddWriteConflictKey touches key's marker at commit (marker.go): readers
// of key compare the marker's revision too, so they conflict, while key
// itself is left alone.
func (t *tx) AddWriteConflictKey(key []byte) error {
	if t.readOnly {
		return kv.ErrReadOnly
	}
	if err := kv.CheckKey(key); err != nil {
		return t.fail(err)
	}
	if t.writeConflict == nil {
		t.writeConflict = map[string]bool{}
	}
	if !t.writeConflict[string(key)] {
		if err := t.count(len(key) + len(t.marker(nil))); err != nil {
			return err
		}
		t.writeConflict[string(key)] = true
	}
	return nil
}

func (t *tx) put(key []byte, w *write, size int) error {
	if t.err != nil {
		return t.err
	}
	if err := t.count(size); err != nil {
		return err
	}
	if t.writes == nil {
		t.writes = map[string]*write{}
	}
	t.writes[string(key)] = w
	return nil
}

// count adds to the bytes the transaction writes and enforces kv.MaxTxnBytes.
func (t *tx) count(n int) error {
	if t.bytes+n > kv.MaxTxnBytes {
		return t.fail(fmt.Errorf("%w: over %d bytes written", kv.ErrTxnTooLarge, kv.MaxTxnBytes))
	}
	t.bytes += n
	return nil
}

func (t *tx) fail(err error) error {
	if t.err == nil {
		t.err = err
	}
	return err
}

func checkRange(begin, end []byte) error {
	if err := kv.CheckRangeKey(begin); err != nil {
		return fmt.Errorf("range begin: %w", err)
	}
	if err := kv.CheckRangeKey(end); err != nil {
		return fmt.Errorf("range end: %w", err)
	}
	return nil
}
