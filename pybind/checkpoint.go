package pybind

// Checkpoint functions for emberfs.checkpoint (docs/checkpoint.md). Bulk
// data crosses as addresses in caller memory, never copied into Python
// objects; lists of regions are packed int64 tables the caller fills
// (e.g. with array('q') or numpy) and passes by address, so one call moves
// many tensors and the GIL stays released for all of it.
//
// Saving (any rank may write shards; one coordinator begins and commits).
// Every function that can fail takes an *Err last (pybind.go), left out
// below:
//
//	sv = c.CheckpointBegin(dir, name, replace)   -> *CheckpointSave; sv.Pending() is the
//	                                                pending directory the ranks write into
//	w  = c.CheckpointOpenShard(pending, "rank-0.bin")
//	w.WriteRegions(table, count, out)            table: count x (addr, len) int64 pairs;
//	                                                out:   count x (offset, len, crc32c) int64
//	                                                triples written by Go
//	w.Size(); w.Acked(); w.Close()               Acked: bytes acknowledged so far (poll it for
//	                                                progress while WriteRegions runs in another
//	                                                thread); Close finalizes the file: a save is
//	                                                complete only if it succeeds
//	sv.Commit(manifestJSON, keepLast, replace, updateLatest) -> path
//	                                             or c.CheckpointCommit(pending, json, keepLast)
//	sv.Stop()                                    stop renewing the lease (abandon)
//	sv.Abort()                                   or c.CheckpointAbort(pending)
//
// manifestJSON is {"tensors": [{"name","file","offset","length","dtype",
// "shape","crc32c"}, ...], "metadata": <any JSON>}; Commit adds format,
// version, name, files and created_unix_ns. "tensors" may be empty (a
// file-only manifest: DCP).
//
// Loading:
//
//	r = c.CheckpointOpen(path); r.ManifestJSON()
//	r.ReadTensors(namesJSON, table)              namesJSON: JSON list of n tensor names;
//	                                                table: n x (addr, len) int64 pairs, len
//	                                                must equal the tensor's length; CRC32C
//	                                                checked per tensor
//	r.ReadRanges(filesJSON, table)               raw ranges: n x (offset, addr, len), no CRC
//	r.Close()
//
// Lifecycle: c.CheckpointList(dir) -> JSON list (with each manifest's
// metadata); c.CheckpointInspect(path) -> manifest JSON;
// c.CheckpointLatest(dir) -> path; c.CheckpointRemove(path);
// c.CheckpointRetain(dir, keep) -> JSON list of removed paths;
// c.CheckpointReclaim(dir, graceSeconds) -> JSON list of pending dirs seen.
//
// Failures fill the Err: a CRC mismatch is code ChecksumMismatch naming the
// tensor and file, a missing shard NotFound naming the file and tensor, a
// truncated one OutOfRange, a path with no checkpoint NotFound, a directory
// without a manifest InvalidArgument, a published name that exists
// AlreadyExists.

import (
	"context"
	"encoding/json"
	"time"
	"unsafe"

	"github.com/emberfs/emberfs/checkpoint"
	"github.com/emberfs/emberfs/internal/errcode"
)

func (c *Client) store() *checkpoint.Store {
	return checkpoint.New(c.c, c.who(), checkpoint.Options{})
}

// int64s turns a caller's packed int64 table into a Go slice (no copy).
func int64s(addr uintptr, n int) ([]int64, error) {
	if n < 0 {
		return nil, errcode.New(errcode.InvalidArgument, "negative table length %d", n)
	}
	if n == 0 {
		return nil, nil
	}
	if addr == 0 {
		return nil, errcode.New(errcode.InvalidArgument, "null table address")
	}
	p := *(*unsafe.Pointer)(unsafe.Pointer(&addr))
	return unsafe.Slice((*int64)(p), n), nil
}

// regionBuffers turns count (addr, len) pairs into slices of caller memory.
func regionBuffers(table uintptr, count int) ([][]byte, error) {
	t, err := int64s(table, 2*count)
	if err != nil {
		return nil, err
	}
	bufs := make([][]byte, count)
	for i := range count {
		if bufs[i], err = buffer(uintptr(t[2*i]), int(t[2*i+1])); err != nil {
			return nil, errcode.New(errcode.InvalidArgument, "region %d: %v", i, err)
		}
	}
	return bufs, nil
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// CheckpointSave is a save begun by this process (the coordinator).
type CheckpointSave struct {
	sv *checkpoint.Save
}

// CheckpointBegin starts saving checkpoint name under job directory dir;
// an existing checkpoint of that name is EEXIST unless replace (then
// commit with replace to publish over it).
func (c *Client) CheckpointBegin(dir, name string, replace bool, e *Err) *CheckpointSave {
	sv, err := c.store().BeginWith(context.Background(), dir, name, replace)
	if err != nil {
		e.set(err)
		return nil
	}
	return &CheckpointSave{sv: sv}
}

// Pending is the pending directory the ranks write their shards into.
func (s *CheckpointSave) Pending() string { return s.sv.Pending }

// Commit writes the manifest and publishes; it returns the final path.
// keepLast > 0 applies retention; replace publishes over an existing
// checkpoint of the name (old one renamed aside, then removed);
// updateLatest points DIR/latest at it.
func (s *CheckpointSave) Commit(manifestJSON string, keepLast int, replace, updateLatest bool, e *Err) string {
	m, err := checkpoint.ParseManifest([]byte(manifestJSON))
	if err != nil {
		e.set(err)
		return ""
	}
	p, err := s.sv.CommitWith(context.Background(), m, checkpoint.CommitOptions{KeepLast: keepLast, Replace: replace, NoLatest: !updateLatest})
	e.set(err)
	return p
}

// Stop stops renewing the lease and leaves the pending directory as it
// is (for tests of abandoned saves; Reclaim removes it later).
func (s *CheckpointSave) Stop() { s.sv.Stop() }

// Abort removes the pending directory.
func (s *CheckpointSave) Abort(e *Err) {
	e.set(s.sv.Abort(context.Background()))
}

// CheckpointCommit publishes a pending directory (for a coordinator that
// did not call CheckpointBegin itself).
func (c *Client) CheckpointCommit(pending, manifestJSON string, keepLast int, e *Err) string {
	m, err := checkpoint.ParseManifest([]byte(manifestJSON))
	if err != nil {
		e.set(err)
		return ""
	}
	p, err := c.store().Commit(context.Background(), pending, m, keepLast)
	e.set(err)
	return p
}

// CheckpointAbort removes a pending directory.
func (c *Client) CheckpointAbort(pending string, e *Err) {
	e.set(c.store().Abort(context.Background(), pending))
	return
}

// ShardWriter writes one shard file.
type ShardWriter struct {
	w *checkpoint.ShardWriter
}

// CheckpointOpenShard creates shard file name in a pending directory.
func (c *Client) CheckpointOpenShard(pending, name string, e *Err) *ShardWriter {
	w, err := c.store().OpenShard(context.Background(), pending, name)
	if err != nil {
		e.set(err)
		return nil
	}
	return &ShardWriter{w: w}
}

// WriteRegions appends count regions ((addr, len) int64 pairs at table)
// and writes (offset, len, crc32c) triples for them at out.
func (w *ShardWriter) WriteRegions(table uintptr, count int, out uintptr, e *Err) {
	bufs, err := regionBuffers(table, count)
	if err != nil {
		e.set(err)
		return
	}
	res, err := int64s(out, 3*count)
	if err != nil {
		e.set(err)
		return
	}
	written, err := w.w.Write(bufs)
	if err != nil {
		e.set(err)
		return
	}
	for i, x := range written {
		res[3*i], res[3*i+1], res[3*i+2] = x.Offset, x.Length, int64(x.CRC32C)
	}
	return
}

// Size is the shard file's length so far.
func (w *ShardWriter) Size() int64 { return w.w.Size() }

// Acked is the region bytes storage acknowledged so far; another thread
// may poll it while WriteRegions runs (progress).
func (w *ShardWriter) Acked() int64 { return w.w.Acked() }

// Path is the shard file's path.
func (w *ShardWriter) Path() string { return w.w.Path() }

// Close waits for every write in flight and finalizes the shard.
func (w *ShardWriter) Close(e *Err) {
	e.set(w.w.Close())
}

// CheckpointReader reads a published checkpoint.
type CheckpointReader struct {
	r *checkpoint.Reader
}

// CheckpointOpen opens the published checkpoint at path.
func (c *Client) CheckpointOpen(path string, e *Err) *CheckpointReader {
	r, err := c.store().Open(context.Background(), path)
	if err != nil {
		e.set(err)
		return nil
	}
	return &CheckpointReader{r: r}
}

// ManifestJSON is the checkpoint's manifest.
func (r *CheckpointReader) ManifestJSON() string { return string(r.r.Manifest().Encode()) }

// ReadTensors reads the tensors namesJSON lists into the (addr, len) pairs
// at table, in parallel, checking each CRC32C.
func (r *CheckpointReader) ReadTensors(namesJSON string, table uintptr, e *Err) {
	var names []string
	if err := json.Unmarshal([]byte(namesJSON), &names); err != nil {
		e.set(errcode.New(errcode.InvalidArgument, "tensor names: want a JSON list of strings: %v", err))
		return
	}
	bufs, err := regionBuffers(table, len(names))
	if err != nil {
		e.set(err)
		return
	}
	e.set(r.r.ReadTensors(context.Background(), names, bufs))
	return
}

// ReadRanges reads raw ranges: filesJSON lists n data file names, table
// holds n (offset, addr, len) int64 triples.
func (r *CheckpointReader) ReadRanges(filesJSON string, table uintptr, e *Err) {
	var files []string
	if err := json.Unmarshal([]byte(filesJSON), &files); err != nil {
		e.set(errcode.New(errcode.InvalidArgument, "file names: want a JSON list of strings: %v", err))
		return
	}
	t, err := int64s(table, 3*len(files))
	if err != nil {
		e.set(err)
		return
	}
	rs := make([]checkpoint.Range, len(files))
	for i, f := range files {
		dst, err := buffer(uintptr(t[3*i+1]), int(t[3*i+2]))
		if err != nil {
			e.set(errcode.New(errcode.InvalidArgument, "range %d: %v", i, err))
			return
		}
		rs[i] = checkpoint.Range{File: f, Offset: t[3*i], Dst: dst}
	}
	e.set(r.r.ReadRanges(context.Background(), rs))
	return
}

// Close closes the reader.
func (r *CheckpointReader) Close(e *Err) {
	e.set(r.r.Close())
}

type infoJSON struct {
	Name          string `json:"name"`
	Path          string `json:"path"`
	CreatedUnixNs int64  `json:"created_unix_ns"`
	Tensors       int    `json:"tensors"`
	Bytes         int64  `json:"bytes"`
	Latest        bool   `json:"latest"`
	// Metadata is the caller's manifest metadata (null when none).
	Metadata json.RawMessage `json:"metadata"`
}

// CheckpointList lists the published checkpoints of dir, oldest first, as
// JSON [{"name","path","created_unix_ns","tensors","bytes","latest"}].
func (c *Client) CheckpointList(dir string, e *Err) string {
	infos, err := c.store().List(context.Background(), dir)
	if err != nil {
		e.set(err)
		return ""
	}
	out := make([]infoJSON, len(infos))
	for i, x := range infos {
		out[i] = infoJSON{Name: x.Name, Path: x.Path, CreatedUnixNs: x.Created.UnixNano(), Tensors: x.Tensors, Bytes: x.Bytes, Latest: x.Latest, Metadata: x.Metadata}
	}
	return toJSON(out)
}

// CheckpointInspect returns a published checkpoint's manifest JSON.
func (c *Client) CheckpointInspect(path string, e *Err) string {
	m, err := c.store().Inspect(context.Background(), path)
	if err != nil {
		e.set(err)
		return ""
	}
	return string(m.Encode())
}

// CheckpointLatest returns the path DIR/latest names.
func (c *Client) CheckpointLatest(dir string, e *Err) string {
	p, err := c.store().Latest(context.Background(), dir)
	e.set(err)
	return p
}

// CheckpointRemove deletes a published checkpoint (moving latest back).
func (c *Client) CheckpointRemove(path string, e *Err) {
	e.set(c.store().Remove(context.Background(), path))
	return
}

// CheckpointRetain keeps the newest keep checkpoints of dir; it returns
// the removed paths as a JSON list.
func (c *Client) CheckpointRetain(dir string, keep int, e *Err) string {
	removed, err := c.store().Retain(context.Background(), dir, keep)
	if err != nil {
		e.set(err)
		return ""
	}
	if removed == nil {
		removed = []string{}
	}
	return toJSON(removed)
}

// CheckpointReclaim removes pending directories of dir whose lease was
// not renewed for graceSeconds (< 0: the default, 5 minutes; 0: all) and returns
// every pending directory seen as JSON [{"path","name","lease_age_s","reclaimed"}].
func (c *Client) CheckpointReclaim(dir string, graceSeconds float64, e *Err) string {
	grace := time.Duration(graceSeconds * float64(time.Second))
	if graceSeconds < 0 {
		grace = -1
	}
	ps, err := c.store().Reclaim(context.Background(), dir, grace, nil)
	if err != nil {
		e.set(err)
		return ""
	}
	type pj struct {
		Path      string  `json:"path"`
		Name      string  `json:"name"`
		LeaseAgeS float64 `json:"lease_age_s"`
		Reclaimed bool    `json:"reclaimed"`
	}
	out := make([]pj, len(ps))
	for i, p := range ps {
		out[i] = pj{p.Path, p.Name, p.LeaseAge.Seconds(), p.Reclaimed}
	}
	return toJSON(out)
}
