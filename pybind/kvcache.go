package pybind

// The KVCache part of the flat API. Everything bulk crosses as memory
// addresses, never as gopy slices: a key is (address, length), a batch of
// keys is one packed buffer plus an int64 array of lengths, and per-key
// buffers and results are int64 arrays the caller owns. gopy converts a Go
// slice element by element through its own handles, so a 64-key batch as
// []string would cost 64+ crossings; as addresses it costs exactly one.
// Namespace descriptions and stats cross as JSON, so the Python side
// follows the Go structs without a gopy struct per version.

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/kvcache"
)

// KVCache is an open KVCache namespace.
type KVCache struct {
	c *kvcache.Cache
}

// KVCreate creates namespace name and returns its description as JSON.
// ttlNs 0 means values never expire; chainTable 0 picks a table whose
// chains have replicas targets; slotBits 0 is the default (64).
func (c *Client) KVCreate(name string, maxValueBytes, ttlNs, capacityBytes int64, replicas int, evict bool, chainTable int, slotBits int, e *Err) string {
	if ttlNs < 0 || maxValueBytes < 0 || capacityBytes < 0 || replicas < 0 || chainTable < 0 || slotBits < 0 || slotBits > 64 {
		e.set(errcode.New(errcode.InvalidArgument, "kvcache create %q: negative or out-of-range setting (max value %d, ttl %dns, capacity %d, replicas %d, chain table %d, slot bits %d)", name, maxValueBytes, ttlNs, capacityBytes, replicas, chainTable, slotBits))
		return ""
	}
	info, err := kvcache.Create(context.Background(), c.c, name, kvcache.Settings{
		MaxValueBytes: maxValueBytes, TTL: time.Duration(ttlNs), CapacityBytes: capacityBytes,
		Replicas: replicas, Evict: evict, ChainTable: uint32(chainTable), SlotBits: uint8(slotBits),
	})
	if err != nil {
		e.set(err)
		return ""
	}
	return toJSON(info)
}

// KVList returns every namespace's description as a JSON array.
func (c *Client) KVList(e *Err) string {
	infos, err := kvcache.List(context.Background(), c.c)
	if err != nil {
		e.set(err)
		return ""
	}
	if infos == nil {
		infos = []kvcache.Namespace{}
	}
	return toJSON(infos)
}

// KVInfo returns namespace name's description as JSON.
func (c *Client) KVInfo(name string, e *Err) string {
	info, err := kvcache.Info(context.Background(), c.c, name)
	if err != nil {
		e.set(err)
		return ""
	}
	return toJSON(info)
}

// KVDrop removes namespace name and every value in it.
func (c *Client) KVDrop(name string, e *Err) {
	e.set(kvcache.Drop(context.Background(), c.c, name))
	return
}

// KVOpen opens namespace name; memoryTierBytes > 0 adds an in-process
// memory tier of that many bytes in front of the cluster.
func (c *Client) KVOpen(name string, memoryTierBytes int64, e *Err) *KVCache {
	if memoryTierBytes < 0 {
		e.set(errcode.New(errcode.InvalidArgument, "kvcache open %q: negative memory tier size %d", name, memoryTierBytes))
		return nil
	}
	kc, err := kvcache.Open(context.Background(), c.c, name, kvcache.Options{MemoryTierBytes: memoryTierBytes})
	if err != nil {
		e.set(err)
		return nil
	}
	return &KVCache{c: kc}
}

// PutFrom stores the value at (valAddr, valLen) under the key at
// (keyAddr, keyLen); neither is copied on the way to the network.
func (k *KVCache) PutFrom(keyAddr uintptr, keyLen int, valAddr uintptr, valLen int, e *Err) {
	key, err := buffer(keyAddr, keyLen)
	if err != nil {
		e.set(err)
		return
	}
	val, err := buffer(valAddr, valLen)
	if err != nil {
		e.set(err)
		return
	}
	if val == nil {
		val = []byte{}
	}
	e.set(k.c.PutFrom(context.Background(), key, val))
	return
}

// GetInto reads key's value into (bufAddr, bufLen) and returns its length,
// or -1 on a miss. A value longer than the buffer is an OutOfRange error
// naming both sizes, and nothing is written.
func (k *KVCache) GetInto(keyAddr uintptr, keyLen int, bufAddr uintptr, bufLen int, e *Err) int {
	key, err := buffer(keyAddr, keyLen)
	if err != nil {
		e.set(err)
		return 0
	}
	buf, err := buffer(bufAddr, bufLen)
	if err != nil {
		e.set(err)
		return 0
	}
	if buf == nil {
		buf = []byte{}
	}
	n, found, err := k.c.GetInto(context.Background(), key, buf)
	if err != nil {
		e.set(err)
		return 0
	}
	if !found {
		return -1
	}
	return n
}

// KVValue is the outcome of Get: a miss (Found false) or a value held on
// the Go side until the caller copies it into memory of the right size.
// (gopy hands a nil pointer to Python as an object, not None, so a miss is
// a field rather than nil.)
type KVValue struct {
	b     []byte
	found bool
}

// Found reports whether the key had a value.
func (v *KVValue) Found() bool { return v.found }

// Len is the value's length in bytes.
func (v *KVValue) Len() int { return len(v.b) }

// CopyTo copies the value into (addr, n); n must equal Len.
func (v *KVValue) CopyTo(addr uintptr, n int, e *Err) {
	if n != len(v.b) {
		e.set(errcode.New(errcode.InvalidArgument, "copy of a %d-byte value into %d bytes", len(v.b), n))
		return
	}
	dst, err := buffer(addr, n)
	if err != nil {
		e.set(err)
		return
	}
	copy(dst, v.b)
	return
}

// Get fetches key's value whatever its size.
func (k *KVCache) Get(keyAddr uintptr, keyLen int, e *Err) *KVValue {
	key, err := buffer(keyAddr, keyLen)
	if err != nil {
		e.set(err)
		return nil
	}
	b, found, err := k.c.Get(context.Background(), key)
	if err != nil {
		e.set(err)
		return nil
	}
	return &KVValue{b: b, found: found}
}

// MaxValueBytes is the namespace's value-size class: the largest value a
// put accepts.
func (k *KVCache) MaxValueBytes() int64 { return k.c.Namespace().MaxValueBytes }

// Remove deletes key; removing a missing key is not an error.
func (k *KVCache) Remove(keyAddr uintptr, keyLen int, e *Err) {
	key, err := buffer(keyAddr, keyLen)
	if err != nil {
		e.set(err)
		return
	}
	e.set(k.c.Remove(context.Background(), key))
	return
}

// unpackKeys splits the packed key buffer by the n lengths at lensAddr. The
// keys alias the caller's buffer (no copy).
func unpackKeys(keysAddr uintptr, keysLen int, lensAddr uintptr, n int) ([][]byte, error) {
	if n < 0 {
		return nil, errcode.New(errcode.InvalidArgument, "negative key count %d", n)
	}
	packed, err := buffer(keysAddr, keysLen)
	if err != nil {
		return nil, err
	}
	lens, err := int64s(lensAddr, n)
	if err != nil {
		return nil, err
	}
	keys := make([][]byte, n)
	off := int64(0)
	for i, l := range lens {
		if l < 0 || off+l > int64(len(packed)) {
			return nil, errcode.New(errcode.InvalidArgument,
				"key %d: length %d at offset %d overruns the %d packed key bytes", i, l, off, len(packed))
		}
		keys[i] = packed[off : off+l : off+l]
		off += l
	}
	if off != int64(len(packed)) {
		return nil, errcode.New(errcode.InvalidArgument, "key lengths sum to %d, packed keys are %d bytes", off, len(packed))
	}
	return keys, nil
}

// buffers turns n (address, length) pairs from two int64 arrays into slices.
func buffers(addrsAddr, lensAddr uintptr, n int) ([][]byte, error) {
	addrs, err := int64s(addrsAddr, n)
	if err != nil {
		return nil, err
	}
	lens, err := int64s(lensAddr, n)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, n)
	for i := range out {
		b, err := buffer(uintptr(addrs[i]), int(lens[i]))
		if err != nil {
			return nil, errcode.New(errcode.InvalidArgument, "buffer %d: %v", i, err)
		}
		if b == nil {
			b = []byte{}
		}
		out[i] = b
	}
	return out, nil
}

// Exists checks n packed keys in one call and writes 1 (present) or 0 into
// the n bytes at outAddr.
func (k *KVCache) Exists(keysAddr uintptr, keysLen int, lensAddr uintptr, n int, outAddr uintptr, e *Err) {
	keys, err := unpackKeys(keysAddr, keysLen, lensAddr, n)
	if err != nil {
		e.set(err)
		return
	}
	out, err := buffer(outAddr, n)
	if err != nil {
		e.set(err)
		return
	}
	if n == 0 {
		return
	}
	found, err := k.c.Exists(context.Background(), keys)
	if err != nil {
		e.set(err)
		return
	}
	for i, f := range found {
		out[i] = 0
		if f {
			out[i] = 1
		}
	}
	return
}

// LongestPrefix returns how many leading keys of the n packed keys are present.
func (k *KVCache) LongestPrefix(keysAddr uintptr, keysLen int, lensAddr uintptr, n int, e *Err) int {
	keys, err := unpackKeys(keysAddr, keysLen, lensAddr, n)
	if err != nil {
		e.set(err)
		return 0
	}
	if n == 0 {
		return 0
	}
	got, err := k.c.LongestPrefix(context.Background(), keys)
	e.set(err)
	return got
}

// BatchPutFrom stores n values (addresses and lengths in two int64 arrays)
// under n packed keys in one call. errnosAddr receives an int64 per key:
// 0 stored, else the errno of its failure (EIO when it has none). The
// returned string joins the failures' messages, "i: message" per line.
func (k *KVCache) BatchPutFrom(keysAddr uintptr, keysLen int, lensAddr uintptr, n int, valAddrsAddr, valLensAddr, errnosAddr uintptr, e *Err) string {
	keys, err := unpackKeys(keysAddr, keysLen, lensAddr, n)
	if err != nil {
		e.set(err)
		return ""
	}
	vals, err := buffers(valAddrsAddr, valLensAddr, n)
	if err != nil {
		e.set(err)
		return ""
	}
	errnos, err := int64s(errnosAddr, n)
	if err != nil {
		e.set(err)
		return ""
	}
	if n == 0 {
		return ""
	}
	errs := k.c.BatchPutFrom(context.Background(), keys, vals)
	var msgs []string
	for i := range errnos {
		errnos[i] = 0
		if i < len(errs) && errs[i] != nil {
			errnos[i] = errnoOrEIO(errs[i])
			msgs = append(msgs, strconv.Itoa(i)+": "+errs[i].Error())
		}
	}
	return strings.Join(msgs, "\n")
}

// BatchGetInto reads n keys into n caller buffers in one call; resultsAddr
// receives an int64 per key: the value's length, or -1 on a miss (a value
// larger than its buffer counts as a miss).
func (k *KVCache) BatchGetInto(keysAddr uintptr, keysLen int, lensAddr uintptr, n int, bufAddrsAddr, bufLensAddr, resultsAddr uintptr, e *Err) {
	keys, err := unpackKeys(keysAddr, keysLen, lensAddr, n)
	if err != nil {
		e.set(err)
		return
	}
	bufs, err := buffers(bufAddrsAddr, bufLensAddr, n)
	if err != nil {
		e.set(err)
		return
	}
	results, err := int64s(resultsAddr, n)
	if err != nil {
		e.set(err)
		return
	}
	if n == 0 {
		return
	}
	ns, err := k.c.BatchGetInto(context.Background(), keys, bufs)
	if ns == nil {
		e.set(err)
		return
	}
	for i := range results {
		results[i] = int64(ns[i])
	}
	// A value too big for its buffer is a miss for that key (-1 above);
	// anything else (a storage failure) is reported.
	if err != nil && !errcode.Is(err, errcode.OutOfRange) {
		e.set(err)
		return
	}
	return
}

// Stats returns the namespace's counters as JSON.
func (k *KVCache) Stats(e *Err) string {
	s, err := k.c.Stats(context.Background())
	if err != nil {
		e.set(err)
		return ""
	}
	return toJSON(s)
}

// Close releases the cache handle.
func (k *KVCache) Close(e *Err) {
	e.set(k.c.Close())
}

func errnoOrEIO(err error) int64 {
	if e := errcode.ErrnoOf(err); e != 0 {
		return int64(e)
	}
	return int64(syscall.EIO)
}
