// Package faultfs is a vfs.FS that wraps another one (normally the real
// one), fails chosen operations on purpose, and keeps a shadow of what is
// durable, so a test can write out what a crash at any moment could have
// left on disk and reopen the engine on it.
//
// Faults are Rules: an operation kind, a path pattern, which matching call
// (After, Times) and an Action: fail with an errno (EIO, ENOSPC), a short
// write, a partial write with an error, or a crash before or after the
// operation. After a crash every further operation fails with ErrCrashed,
// as if the machine had stopped.
//
// The shadow follows POSIX at its strictest: a file's bytes and size are
// durable once the file is synced (fdatasync); a create, mkdir, rename or
// remove is durable once its directory is synced (fsync on an OpenDir
// handle). CrashImage builds the tree a crash could leave: only what was
// durable (LoseUnsynced), everything (KeepUnsynced: a process crash), or
// a seeded random mix in which each unsynced change is kept, lost or, for
// writes, torn (TearUnsynced). Pebble's errorfs and strict MemFS are the
// model; the code is our own.
package faultfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/emberfs/emberfs/storage/chunkengine/vfs"
)

// Op is a kind of file-system operation; Ops combine with |.
type Op uint32

const (
	OpOpen     Op = 1 << iota // OpenFile without O_CREATE, OpenDir
	OpCreate                  // OpenFile with O_CREATE, Lock
	OpRead                    // File.ReadAt
	OpWrite                   // File.WriteAt
	OpSync                    // File.Sync: fdatasync of a file, fsync of a directory
	OpTruncate                // File.Truncate
	OpRename                  // Rename
	OpRemove                  // Remove, RemoveAll
	OpMkdir                   // Mkdir, MkdirAll
	OpList                    // ReadDir
	OpStat                    // Stat, DiskUsage

	// OpMutate is every operation that changes the file system: the
	// places a crash can come.
	OpMutate = OpCreate | OpWrite | OpSync | OpTruncate | OpRename | OpRemove | OpMkdir
	// OpAll is every operation.
	OpAll = OpOpen | OpRead | OpList | OpStat | OpMutate
)

var opNames = [...]string{"open", "create", "read", "write", "sync", "truncate", "rename", "remove", "mkdir", "readdir", "stat"}

func (o Op) String() string {
	var names []string
	for i, n := range opNames {
		if o&(1<<i) != 0 {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, "|")
}

// Action is what a firing rule does to the operation.
type Action uint8

const (
	// Fail: the operation does nothing and returns Rule.Err.
	Fail Action = iota
	// ShortWrite: a write stores the first half of its bytes and reports
	// that count with no error (what io.WriterAt forbids, and what a
	// careless layer could still do). Other operations Fail.
	ShortWrite
	// PartialWrite: a write stores the first half of its bytes, then
	// returns Rule.Err (a disk filling up mid-write). Other operations Fail.
	PartialWrite
	// CrashBefore: the machine stops just before the operation.
	CrashBefore
	// CrashAfter: the operation happens, then the machine stops; the
	// caller gets ErrCrashed and cannot know it happened.
	CrashAfter
)

func (a Action) String() string {
	return [...]string{"fail", "short-write", "partial-write", "crash-before", "crash-after"}[a]
}

// Rule selects operations and says what to do to them.
type Rule struct {
	Ops Op
	// Path is a path.Match pattern on the slash-separated path below the
	// root ("meta.log", "target/data/*/*"); "" matches every path.
	Path string
	// After lets this many matching calls through before the rule fires.
	After int
	// Times is how often the rule fires; 0 means on every matching call
	// from then on.
	Times  int
	Action Action
	// Err is the error of Fail and PartialWrite (default syscall.EIO).
	Err syscall.Errno
}

// ErrCrashed is what every operation returns once the simulated machine
// has crashed.
var ErrCrashed = errors.New("faultfs: simulated crash")

// Options tune a FS.
type Options struct {
	// SkipRealSync records syncs in the shadow without syncing the real
	// files. Crash images come from the shadow, so crash tests need no
	// real durability and run without waiting for the disk.
	SkipRealSync bool
}

// FS is the fault-injecting file system. Its operations are serialized
// (the shadow must see them in the order the real file system did).
type FS struct {
	base vfs.FS
	root string
	opts Options

	mu      sync.Mutex
	rules   []*ruleState
	crashed bool
	counts  [len(opNames)]int

	initial map[string]*node // tree at New: durable by definition
	cur     map[string]*node // tree now, as the real file system has it
	nsOps   []*nsOp          // namespace changes since New, in order
}

type ruleState struct {
	Rule
	seen, fired int
}

// node is a file or directory of the shadow.
type node struct {
	dir     bool
	durable []byte   // content as of the last sync
	changes []change // unsynced changes since, in order
}

// change is an unsynced write (data at off) or truncate (to size).
type change struct {
	trunc bool
	off   int64
	data  []byte
}

type nsKind uint8

const (
	nsCreate nsKind = iota
	nsMkdir
	nsRemove
	nsRename
)

// nsOp is a namespace change; durable once a directory it touches is synced.
type nsOp struct {
	kind     nsKind
	from, to string // to: the path created, removed, or renamed to
	n        *node
	durable  bool
}

// New wraps base for the tree under root (which must exist). Everything
// under root now counts as durable.
func New(base vfs.FS, root string, opts Options) (*FS, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	f := &FS{base: base, root: root, opts: opts, initial: map[string]*node{}, cur: map[string]*node{}}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel := f.mustRel(p)
		n := &node{dir: d.IsDir()}
		if !n.dir {
			if !d.Type().IsRegular() {
				return fmt.Errorf("faultfs: %s is neither a file nor a directory", p)
			}
			if n.durable, err = os.ReadFile(p); err != nil {
				return err
			}
		}
		f.initial[rel] = n
		f.cur[rel] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("faultfs: snapshot %s: %w", root, err)
	}
	return f, nil
}

// Add installs a rule and returns its index for Fired.
func (f *FS) Add(r Rule) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Err == 0 {
		r.Err = syscall.EIO
	}
	f.rules = append(f.rules, &ruleState{Rule: r})
	return len(f.rules) - 1
}

// ClearRules removes every rule (a fault that passes: space returns).
func (f *FS) ClearRules() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
}

// Fired reports how often rule i has fired. A test asserts it, so a fault
// that never happened cannot pass for one the code survived.
func (f *FS) Fired(i int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rules[i].fired
}

// Count is the number of operations of the kinds in ops seen so far
// (failed ones included, none after a crash).
func (f *FS) Count(ops Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	total := 0
	for i, c := range f.counts {
		if ops&(1<<i) != 0 {
			total += c
		}
	}
	return total
}

// Crash stops the machine now: every further operation fails.
func (f *FS) Crash() {
	f.mu.Lock()
	f.crashed = true
	f.mu.Unlock()
}

// Crashed reports whether the machine has crashed.
func (f *FS) Crashed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.crashed
}

func (f *FS) mustRel(p string) string {
	rel, err := filepath.Rel(f.root, p)
	if err != nil {
		panic(err)
	}
	return filepath.ToSlash(rel)
}

// rel is name's shadow key, or an error for names outside the root.
func (f *FS) rel(name string) (string, error) {
	abs, err := filepath.Abs(name)
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(f.root, abs)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", &os.PathError{Op: "faultfs", Path: name, Err: fmt.Errorf("outside the root %s", f.root)}
	}
	return filepath.ToSlash(rel), nil
}

// begin starts operation op on name under f.mu (the caller holds it). It
// returns the rule firing on it, or the error to return at once.
func (f *FS) begin(op Op, opName, name, rel string) (*ruleState, error) {
	if f.crashed {
		return nil, &os.PathError{Op: opName, Path: name, Err: ErrCrashed}
	}
	for i := range opNames {
		if op&(1<<i) != 0 {
			f.counts[i]++
		}
	}
	var fire *ruleState
	for _, r := range f.rules {
		if r.Ops&op == 0 {
			continue
		}
		if r.Path != "" {
			if ok, _ := path.Match(r.Path, rel); !ok {
				continue
			}
		}
		r.seen++
		if fire == nil && r.seen > r.After && (r.Times == 0 || r.fired < r.Times) {
			r.fired++
			fire = r
		}
	}
	if fire == nil {
		return nil, nil
	}
	switch fire.Action {
	case CrashBefore:
		f.crashed = true
		return nil, &os.PathError{Op: opName, Path: name, Err: ErrCrashed}
	case CrashAfter:
		return fire, nil
	case ShortWrite, PartialWrite:
		if op == OpWrite {
			return fire, nil
		}
	}
	return nil, &os.PathError{Op: opName, Path: name, Err: fire.Err}
}

// end finishes an operation that ran: a CrashAfter rule crashes now.
func (f *FS) end(r *ruleState, opName, name string, err error) error {
	if r != nil && r.Action == CrashAfter {
		f.crashed = true
		return &os.PathError{Op: opName, Path: name, Err: ErrCrashed}
	}
	return err
}

func parentOf(rel string) string { return path.Dir(rel) }

func (f *FS) addNS(kind nsKind, from, to string, n *node) {
	f.nsOps = append(f.nsOps, &nsOp{kind: kind, from: from, to: to, n: n})
}

// OpenFile opens name, recording a create in the shadow.
func (f *FS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	rel, err := f.rel(name)
	if err != nil {
		return nil, err
	}
	op, opName := OpOpen, "open"
	if flag&os.O_CREATE != 0 {
		op, opName = OpCreate, "create"
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r, err := f.begin(op, opName, name, rel)
	if err != nil {
		return nil, err
	}
	bf, err := f.base.OpenFile(name, flag, perm)
	if err != nil {
		return nil, f.end(r, opName, name, err)
	}
	n := f.cur[rel]
	if n == nil {
		n = &node{}
		f.cur[rel] = n
		f.addNS(nsCreate, "", rel, n)
	}
	if flag&os.O_TRUNC != 0 && flag&(os.O_WRONLY|os.O_RDWR) != 0 {
		n.changes = append(n.changes, change{trunc: true})
	}
	ff := &file{fs: f, base: bf, n: n, name: name, rel: rel}
	if err := f.end(r, opName, name, nil); err != nil {
		bf.Close()
		return nil, err
	}
	return ff, nil
}

// OpenDir opens a directory, whose Sync makes its entries durable.
func (f *FS) OpenDir(name string) (vfs.File, error) {
	rel, err := f.rel(name)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.begin(OpOpen, "open", name, rel); err != nil {
		return nil, err
	}
	bf, err := f.base.OpenDir(name)
	if err != nil {
		return nil, err
	}
	return &file{fs: f, base: bf, name: name, rel: rel, dir: true}, nil
}

func (f *FS) mkdirShadow(rel string) {
	if rel == "." || f.cur[rel] != nil {
		return
	}
	f.mkdirShadow(parentOf(rel))
	n := &node{dir: true}
	f.cur[rel] = n
	f.addNS(nsMkdir, "", rel, n)
}

// Mkdir creates a directory.
func (f *FS) Mkdir(name string, perm os.FileMode) error {
	return f.mkdir(name, perm, f.base.Mkdir)
}

// MkdirAll creates a directory and its missing parents.
func (f *FS) MkdirAll(name string, perm os.FileMode) error {
	return f.mkdir(name, perm, f.base.MkdirAll)
}

func (f *FS) mkdir(name string, perm os.FileMode, do func(string, os.FileMode) error) error {
	rel, err := f.rel(name)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r, err := f.begin(OpMkdir, "mkdir", name, rel)
	if err != nil {
		return err
	}
	if err := do(name, perm); err != nil {
		return f.end(r, "mkdir", name, err)
	}
	f.mkdirShadow(rel)
	return f.end(r, "mkdir", name, nil)
}

// Rename renames a file or directory.
func (f *FS) Rename(oldname, newname string) error {
	from, err := f.rel(oldname)
	if err != nil {
		return err
	}
	to, err := f.rel(newname)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r, err := f.begin(OpRename, "rename", oldname, from)
	if err != nil {
		return err
	}
	if err := f.base.Rename(oldname, newname); err != nil {
		return f.end(r, "rename", oldname, err)
	}
	moveTree(f.cur, from, to)
	f.addNS(nsRename, from, to, nil)
	return f.end(r, "rename", oldname, nil)
}

// Remove removes a file or an empty directory.
func (f *FS) Remove(name string) error { return f.remove(name, f.base.Remove) }

// RemoveAll removes a tree.
func (f *FS) RemoveAll(name string) error { return f.remove(name, f.base.RemoveAll) }

func (f *FS) remove(name string, do func(string) error) error {
	rel, err := f.rel(name)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r, err := f.begin(OpRemove, "remove", name, rel)
	if err != nil {
		return err
	}
	if err := do(name); err != nil {
		return f.end(r, "remove", name, err)
	}
	if f.cur[rel] != nil {
		removeTree(f.cur, rel)
		f.addNS(nsRemove, "", rel, nil)
	}
	return f.end(r, "remove", name, nil)
}

// ReadDir lists a directory.
func (f *FS) ReadDir(name string) ([]os.DirEntry, error) {
	rel, err := f.rel(name)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.begin(OpList, "readdir", name, rel); err != nil {
		return nil, err
	}
	return f.base.ReadDir(name)
}

// Stat describes a file.
func (f *FS) Stat(name string) (os.FileInfo, error) {
	rel, err := f.rel(name)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.begin(OpStat, "stat", name, rel); err != nil {
		return nil, err
	}
	return f.base.Stat(name)
}

// DiskUsage describes the space of the file system under path.
func (f *FS) DiskUsage(p string) (vfs.DiskUsage, error) {
	rel, err := f.rel(p)
	if err != nil {
		return vfs.DiskUsage{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.begin(OpStat, "statfs", p, rel); err != nil {
		return vfs.DiskUsage{}, err
	}
	return f.base.DiskUsage(p)
}

// Lock takes the base file system's lock on name, creating the file.
func (f *FS) Lock(name string) (io.Closer, error) {
	rel, err := f.rel(name)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r, err := f.begin(OpCreate, "lock", name, rel)
	if err != nil {
		return nil, err
	}
	c, err := f.base.Lock(name)
	if err != nil {
		return nil, f.end(r, "lock", name, err)
	}
	if f.cur[rel] == nil {
		n := &node{}
		f.cur[rel] = n
		f.addNS(nsCreate, "", rel, n)
	}
	if err := f.end(r, "lock", name, nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// file is an open file (or directory) of a FS.
type file struct {
	fs   *FS
	base vfs.File
	n    *node // nil for directories
	name string
	rel  string
	dir  bool
}

func (h *file) ReadAt(p []byte, off int64) (int, error) {
	f := h.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.begin(OpRead, "read", h.name, h.rel); err != nil {
		return 0, err
	}
	return h.base.ReadAt(p, off)
}

func (h *file) WriteAt(p []byte, off int64) (int, error) {
	f := h.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	r, err := f.begin(OpWrite, "write", h.name, h.rel)
	if err != nil {
		return 0, err
	}
	var fault error
	if r != nil && (r.Action == ShortWrite || r.Action == PartialWrite) {
		p = p[:len(p)/2]
		if r.Action == PartialWrite {
			fault = &os.PathError{Op: "write", Path: h.name, Err: r.Err}
		}
	}
	n, err := h.base.WriteAt(p, off)
	if n > 0 && h.n != nil {
		h.n.changes = append(h.n.changes, change{off: off, data: slices.Clone(p[:n])})
	}
	if err == nil {
		err = fault
	}
	return n, f.end(r, "write", h.name, err)
}

func (h *file) Truncate(size int64) error {
	f := h.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	r, err := f.begin(OpTruncate, "truncate", h.name, h.rel)
	if err != nil {
		return err
	}
	if err := h.base.Truncate(size); err != nil {
		return f.end(r, "truncate", h.name, err)
	}
	if h.n != nil {
		h.n.changes = append(h.n.changes, change{trunc: true, off: size})
	}
	return f.end(r, "truncate", h.name, nil)
}

// Sync makes the file's content durable in the shadow, or for a
// directory, every namespace change inside it. A failed sync changes
// nothing: what the kernel kept after it is unknown.
func (h *file) Sync() error {
	f := h.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	r, err := f.begin(OpSync, "sync", h.name, h.rel)
	if err != nil {
		return err
	}
	if !f.opts.SkipRealSync {
		if err := h.base.Sync(); err != nil {
			return f.end(r, "sync", h.name, err)
		}
	}
	if h.dir {
		for _, op := range f.nsOps {
			if parentOf(op.to) == h.rel || (op.kind == nsRename && parentOf(op.from) == h.rel) {
				op.durable = true
			}
		}
	} else if h.n != nil {
		h.n.durable = h.n.content(nil)
		h.n.changes = nil
	}
	return f.end(r, "sync", h.name, nil)
}

// Close always closes the real file, crashed or not, so tests leak nothing.
func (h *file) Close() error     { return h.base.Close() }
func (h *file) Fd() uintptr      { return h.base.Fd() }
func (h *file) Unwrap() vfs.File { return h.base }

// content is the node's bytes with its unsynced changes applied: all of
// them (keep nil), or those keep chooses; keep may also shorten a write
// to a prefix (a torn write).
func (n *node) content(keep func(c change) (bool, int)) []byte {
	b := slices.Clone(n.durable)
	for _, c := range n.changes {
		data := c.data
		if keep != nil {
			ok, k := keep(c)
			if !ok {
				continue
			}
			data = data[:k]
		}
		if c.trunc {
			if c.off <= int64(len(b)) {
				b = b[:c.off]
			} else {
				b = append(b, make([]byte, c.off-int64(len(b)))...)
			}
			continue
		}
		if end := c.off + int64(len(data)); end > int64(len(b)) {
			b = append(b, make([]byte, end-int64(len(b)))...)
		}
		copy(b[c.off:], data)
	}
	return b
}

func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

func removeTree(t map[string]*node, rel string) {
	for p := range t {
		if under(p, rel) {
			delete(t, p)
		}
	}
}

func moveTree(t map[string]*node, from, to string) {
	if from == to {
		return // rename(2) onto itself does nothing
	}
	removeTree(t, to)
	for p, n := range t {
		if under(p, from) {
			delete(t, p)
			t[to+strings.TrimPrefix(p, from)] = n
		}
	}
}

// CrashMode says which unsynced changes a crash image keeps.
type CrashMode uint8

const (
	// LoseUnsynced keeps exactly what was made durable (power loss with
	// an unhelpful disk).
	LoseUnsynced CrashMode = iota
	// KeepUnsynced keeps every change (a process crash: the page cache
	// survives).
	KeepUnsynced
	// TearUnsynced keeps, loses or (writes) tears each unsynced change at
	// random, from a seed.
	TearUnsynced
)

func (m CrashMode) String() string {
	return [...]string{"lose-unsynced", "keep-unsynced", "tear-unsynced"}[m]
}

// CrashImage writes to dst (created; it must not exist or be empty) the
// tree under the root that a crash now could leave, as mode says. It does
// not stop the machine (Crash does); dst is outside the shadow.
func (f *FS) CrashImage(dst string, mode CrashMode, seed uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	rng := rand.New(rand.NewPCG(seed, 0x6661756c74))
	coin := func() bool { return mode == KeepUnsynced || (mode == TearUnsynced && rng.IntN(2) == 0) }
	tree := make(map[string]*node, len(f.initial))
	for p, n := range f.initial {
		tree[p] = n
	}
	isDir := func(p string) bool { return p == "." || (tree[p] != nil && tree[p].dir) }
	for _, op := range f.nsOps {
		if !op.durable && !coin() {
			continue
		}
		switch op.kind {
		case nsCreate, nsMkdir:
			if isDir(parentOf(op.to)) && tree[op.to] == nil {
				tree[op.to] = op.n
			}
		case nsRemove:
			removeTree(tree, op.to)
		case nsRename:
			if tree[op.from] != nil && isDir(parentOf(op.to)) {
				moveTree(tree, op.from, op.to)
			}
		}
	}
	if entries, err := os.ReadDir(dst); err == nil && len(entries) > 0 {
		return fmt.Errorf("faultfs: crash image target %s is not empty", dst)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	paths := make([]string, 0, len(tree))
	for p := range tree {
		paths = append(paths, p)
	}
	slices.Sort(paths) // parents before children
	for _, p := range paths {
		n, out := tree[p], filepath.Join(dst, filepath.FromSlash(p))
		if n.dir {
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			continue
		}
		var b []byte
		switch mode {
		case LoseUnsynced:
			b = slices.Clone(n.durable)
		case KeepUnsynced:
			b = n.content(nil)
		case TearUnsynced:
			b = n.content(func(c change) (bool, int) {
				switch rng.IntN(3) {
				case 0:
					return false, 0
				case 1:
					return true, len(c.data)
				}
				return true, rng.IntN(len(c.data) + 1)
			})
		}
		if err := os.WriteFile(out, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
