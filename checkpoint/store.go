// Package checkpoint stores training checkpoints on EmberFS: ranks write
// shard files in parallel into a pending directory, a coordinator writes
// the manifest last and publishes the checkpoint with one rename, readers
// load byte ranges in parallel straight into caller memory and verify
// CRC32C per tensor. See docs/checkpoint.md.
//
// Layout of a job directory DIR:
//
//	DIR/<name>/                      published checkpoint (manifest.json + data files)
//	DIR/.pending-<name>-<32 hex>/    a save in progress (.lease renewed by its writers)
//	DIR/latest                       name of the newest published checkpoint
package checkpoint

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
)

const (
	pendingPrefix = ".pending-"
	leaseName     = ".lease"
	latestName    = "latest"
	// DefaultLeaseInterval is how often writers of a pending directory
	// renew its lease; DefaultReclaimGrace how long a lease may go
	// unrenewed before Reclaim removes the pending directory.
	DefaultLeaseInterval = 10 * time.Second
	DefaultReclaimGrace  = 5 * time.Minute
	// DefaultReadParallel is how many tensors a Reader fetches at once
	// (each large one fans out over its chunks).
	DefaultReadParallel = 16
)

// Options tune a Store. Zero fields take the defaults.
type Options struct {
	LeaseInterval time.Duration
	ReadParallel  int
}

// Store is the checkpoint API over one client, acting as one user.
type Store struct {
	c    *client.Client
	u    meta.User
	opts Options
}

// New returns a Store over c acting as u.
func New(c *client.Client, u meta.User, opts Options) *Store {
	if opts.LeaseInterval <= 0 {
		opts.LeaseInterval = DefaultLeaseInterval
	}
	if opts.ReadParallel <= 0 {
		opts.ReadParallel = DefaultReadParallel
	}
	return &Store{c: c, u: u, opts: opts}
}

// Client is the store's client.
func (s *Store) Client() *client.Client { return s.c }

func validName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || strings.HasPrefix(name, ".") || name == latestName {
		return errcode.New(errcode.InvalidArgument, "checkpoint name %q: want a plain name not starting with '.' and not %q", name, latestName)
	}
	return nil
}

// splitPending returns the job directory and checkpoint name of a pending
// directory path.
func splitPending(pending string) (dir, name string, err error) {
	pending = path.Clean(pending)
	dir, base := path.Split(pending)
	rest, ok := strings.CutPrefix(base, pendingPrefix)
	if !ok || len(rest) < 34 || rest[len(rest)-33] != '-' {
		return "", "", errcode.New(errcode.InvalidArgument, "%s is not a pending checkpoint directory (want DIR/%s<name>-<id>)", pending, pendingPrefix)
	}
	if _, err := hex.DecodeString(rest[len(rest)-32:]); err != nil {
		return "", "", errcode.New(errcode.InvalidArgument, "%s is not a pending checkpoint directory (bad id)", pending)
	}
	return path.Clean(dir), rest[:len(rest)-33], nil
}

// Save is a save in progress, started by Begin: its pending directory and
// the lease kept while the coordinator holds it.
type Save struct {
	s       *Store
	Dir     string
	Name    string
	Pending string
	stop    func()
}

// Begin starts saving checkpoint name in job directory dir (created if
// missing): it makes the pending directory, whose path the ranks' shard
// writers need, and renews its lease until Commit or Abort. A checkpoint
// already published under name is an AlreadyExists error.
func (s *Store) Begin(ctx context.Context, dir, name string) (*Save, error) {
	return s.BeginWith(ctx, dir, name, false)
}

// BeginWith is Begin; with replace, an existing checkpoint of the name is
// no error (commit with CommitOptions.Replace to publish over it).
func (s *Store) BeginWith(ctx context.Context, dir, name string, replace bool) (*Save, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	dir = path.Clean(dir)
	if _, err := s.c.Mkdir(ctx, s.u, meta.P(dir), 0o755, true); err != nil {
		return nil, err
	}
	final := path.Join(dir, name)
	if _, err := s.c.Stat(ctx, s.u, meta.PathAt{Path: final, NoFollow: true}); err == nil && !replace {
		return nil, errcode.New(errcode.AlreadyExists, "checkpoint %s already exists", final)
	} else if err != nil && !errcode.Is(err, errcode.NotFound) {
		return nil, err
	}
	pending := pendingPath(dir, name)
	if _, err := s.c.Mkdir(ctx, s.u, meta.P(pending), 0o755, false); err != nil {
		return nil, err
	}
	if err := s.c.WriteFile(ctx, s.u, meta.P(path.Join(pending, leaseName)), nil, 0o644); err != nil {
		return nil, err
	}
	return &Save{s: s, Dir: dir, Name: name, Pending: pending, stop: s.keepLease(pending)}, nil
}

// keepLease renews the lease of a pending directory until the returned
// function is called.
func (s *Store) keepLease(pending string) func() {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(s.opts.LeaseInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), s.opts.LeaseInterval)
			_, _ = s.c.SetAttr(ctx, s.u, meta.P(path.Join(pending, leaseName)), meta.SetAttr{MtimeNow: true})
			cancel()
		}
	}()
	return func() {
		select {
		case <-done:
		default:
			close(done)
		}
		<-finished
	}
}

// Commit publishes the save with manifest m (see Store.Commit).
func (sv *Save) Commit(ctx context.Context, m *Manifest, keepLast int) (string, error) {
	return sv.CommitWith(ctx, m, CommitOptions{KeepLast: keepLast})
}

// CommitWith publishes the save with manifest m (see Store.CommitWith).
func (sv *Save) CommitWith(ctx context.Context, m *Manifest, o CommitOptions) (string, error) {
	defer sv.stop()
	return sv.s.CommitWith(ctx, sv.Pending, m, o)
}

// Stop stops renewing the lease without removing anything (the save is
// published or aborted by another process, or abandoned).
func (sv *Save) Stop() { sv.stop() }

// Abort removes the pending directory.
func (sv *Save) Abort(ctx context.Context) error {
	sv.stop()
	return sv.s.Abort(ctx, sv.Pending)
}

// Commit publishes a pending directory: it checks m against the files
// there (every tensor's file present and long enough; every shard writer
// must have been closed), writes manifest.json, renames the directory to
// its final name (failing with AlreadyExists, and removing the pending
// directory, if another save published that name first), points
// DIR/latest at it and, with keepLast > 0, removes older checkpoints so
// that keepLast remain. It returns the published path.
func (s *Store) Commit(ctx context.Context, pending string, m *Manifest, keepLast int) (string, error) {
	return s.CommitWith(ctx, pending, m, CommitOptions{KeepLast: keepLast})
}

// CommitOptions tune a commit.
type CommitOptions struct {
	// KeepLast > 0 removes older checkpoints of the job so that KeepLast
	// remain (never the one latest names).
	KeepLast int
	// Replace publishes over an existing checkpoint of the same name: the
	// old one is first renamed aside (one rename), the new one renamed in,
	// then the old one removed, so readers see the old or the new one (or
	// for an instant none), never a mix.
	Replace bool
	// NoLatest leaves DIR/latest alone.
	NoLatest bool
}

// CommitWith is Commit with options.
func (s *Store) CommitWith(ctx context.Context, pending string, m *Manifest, o CommitOptions) (string, error) {
	dir, name, err := splitPending(pending)
	if err != nil {
		return "", err
	}
	if m == nil {
		return "", errcode.New(errcode.InvalidArgument, "commit %s: no manifest", pending)
	}
	if err := m.checkTensors(); err != nil {
		return "", err
	}
	entries, err := s.c.ReadDir(ctx, s.u, meta.P(pending), true)
	if err != nil {
		return "", err
	}
	files := map[string]FileInfo{}
	for _, e := range entries {
		if e.Name == leaseName || e.Type != meta.TypeFile {
			continue
		}
		if e.Name == ManifestName {
			return "", errcode.New(errcode.AlreadyExists, "commit %s: a manifest is already there (committed twice?)", pending)
		}
		files[e.Name] = FileInfo{Size: int64(e.Inode.Size)}
	}
	mm := *m
	mm.Format, mm.Version, mm.Name, mm.Files = Format, Version, name, files
	mm.CreatedUnixNano = time.Now().UnixNano()
	if err := mm.checkFiles(); err != nil {
		return "", err
	}
	if err := s.writeNew(ctx, path.Join(pending, ManifestName), mm.Encode()); err != nil {
		return "", err
	}
	final := path.Join(dir, name)
	aside := ""
	if o.Replace {
		if _, err := s.Inspect(ctx, final); err == nil {
			aside = pendingPath(dir, name)
			if err := s.c.Rename(ctx, s.u, meta.P(final), meta.P(aside), meta.RenameNoReplace); err != nil {
				if !errcode.Is(err, errcode.NotFound) {
					return "", err
				}
				aside = "" // removed meanwhile
			}
		}
	}
	if err := s.c.Rename(ctx, s.u, meta.P(pending), meta.P(final), meta.RenameNoReplace); err != nil {
		if aside != "" {
			_ = s.c.Rename(ctx, s.u, meta.P(aside), meta.P(final), meta.RenameNoReplace)
		}
		if errcode.Is(err, errcode.AlreadyExists) || errcode.Is(err, errcode.NotEmpty) {
			_ = s.c.RemoveAll(ctx, s.u, meta.P(pending))
			return "", errcode.New(errcode.AlreadyExists, "commit: checkpoint %s already exists (another save published it first); this save was discarded", final)
		}
		return "", err
	}
	_ = s.c.Remove(ctx, s.u, meta.P(path.Join(final, leaseName)))
	if aside != "" {
		if err := s.c.RemoveAll(ctx, s.u, meta.P(aside)); err != nil && !errcode.Is(err, errcode.NotFound) {
			return final, err
		}
	}
	if !o.NoLatest {
		if err := s.setLatest(ctx, dir, name); err != nil {
			return final, err
		}
	}
	if o.KeepLast > 0 {
		if _, err := s.Retain(ctx, dir, o.KeepLast); err != nil {
			return final, err
		}
	}
	return final, nil
}

// pendingPath is a new pending directory path for name in dir (also used
// for a checkpoint moved aside to be removed: Reclaim finishes the job if
// the remover dies).
func pendingPath(dir, name string) string {
	var id [16]byte
	_, _ = rand.Read(id[:])
	return path.Join(dir, pendingPrefix+name+"-"+hex.EncodeToString(id[:]))
}

// writeNew writes a new file (failing if it exists) and syncs it.
func (s *Store) writeNew(ctx context.Context, p string, data []byte) error {
	f, err := s.c.Open(ctx, s.u, meta.P(p), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if len(data) > 0 {
		if _, err = f.WriteAt(data, 0); err != nil {
			_ = f.Close()
			return err
		}
	}
	return f.Close()
}

// setLatest points DIR/latest at name: a new file renamed over the old
// one, so a reader sees the old name or the new one.
func (s *Store) setLatest(ctx context.Context, dir, name string) error {
	var id [8]byte
	_, _ = rand.Read(id[:])
	tmp := path.Join(dir, ".latest-"+hex.EncodeToString(id[:]))
	if err := s.writeNew(ctx, tmp, []byte(name+"\n")); err != nil {
		return err
	}
	if err := s.c.Rename(ctx, s.u, meta.P(tmp), meta.P(path.Join(dir, latestName)), 0); err != nil {
		_ = s.c.Remove(ctx, s.u, meta.P(tmp))
		return err
	}
	return nil
}

// Abort removes a pending directory and everything in it.
func (s *Store) Abort(ctx context.Context, pending string) error {
	if _, _, err := splitPending(pending); err != nil {
		return err
	}
	return s.c.RemoveAll(ctx, s.u, meta.P(pending))
}

// Latest returns the path of the checkpoint DIR/latest names. When the
// pointer is missing or names a checkpoint that is gone (removed by hand,
// or a crash between publish and pointer update), it is the newest
// published checkpoint; NotFound if there is none.
func (s *Store) Latest(ctx context.Context, dir string) (string, error) {
	dir = path.Clean(dir)
	if p, err := s.pointer(ctx, dir); err != nil {
		return "", err
	} else if p != "" {
		if _, err := s.Inspect(ctx, p); err == nil {
			return p, nil
		}
	}
	all, err := s.List(ctx, dir)
	if err != nil {
		if errcode.Is(err, errcode.NotFound) {
			return "", errcode.New(errcode.NotFound, "no latest checkpoint in %s", dir)
		}
		return "", err
	}
	if len(all) == 0 {
		return "", errcode.New(errcode.NotFound, "no latest checkpoint in %s", dir)
	}
	return all[len(all)-1].Path, nil
}

// pointer is the path DIR/latest names ("" when there is no pointer).
func (s *Store) pointer(ctx context.Context, dir string) (string, error) {
	b, err := s.c.ReadFile(ctx, s.u, meta.P(path.Join(dir, latestName)))
	if err != nil {
		if errcode.Is(err, errcode.NotFound) {
			return "", nil
		}
		return "", err
	}
	name := strings.TrimSpace(string(b))
	if validName(name) != nil {
		return "", errcode.New(errcode.Internal, "%s/%s holds %q, not a checkpoint name", dir, latestName, name)
	}
	return path.Join(dir, name), nil
}

// Info describes a published checkpoint.
type Info struct {
	Name    string
	Path    string
	Created time.Time
	Tensors int
	Bytes   int64 // Manifest.DataBytes
	Latest  bool
	// Metadata is the caller's JSON from the manifest.
	Metadata json.RawMessage
}

// List returns the published checkpoints in dir, oldest first. A
// directory without a readable manifest is not a checkpoint and is left
// out.
func (s *Store) List(ctx context.Context, dir string) ([]Info, error) {
	dir = path.Clean(dir)
	entries, err := s.c.ReadDir(ctx, s.u, meta.P(dir), false)
	if err != nil {
		return nil, err
	}
	latest, _ := s.pointer(ctx, dir)
	var out []Info
	for _, e := range entries {
		if e.Type != meta.TypeDir || strings.HasPrefix(e.Name, ".") {
			continue
		}
		p := path.Join(dir, e.Name)
		m, err := s.Inspect(ctx, p)
		if err != nil {
			if errcode.Is(err, errcode.NotFound) || errcode.Is(err, errcode.InvalidArgument) || errcode.Is(err, errcode.NotSupported) {
				continue
			}
			return nil, err
		}
		out = append(out, Info{Name: e.Name, Path: p, Created: time.Unix(0, m.CreatedUnixNano), Tensors: len(m.Tensors),
			Bytes: m.DataBytes(), Latest: p == latest, Metadata: m.Metadata})
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// Inspect reads a published checkpoint's manifest.
func (s *Store) Inspect(ctx context.Context, p string) (*Manifest, error) {
	p = path.Clean(p)
	b, err := s.c.ReadFile(ctx, s.u, meta.P(path.Join(p, ManifestName)))
	if err != nil {
		if errcode.Is(err, errcode.NotFound) || errcode.Is(err, errcode.NotDirectory) {
			if _, serr := s.c.Stat(ctx, s.u, meta.PathAt{Path: p, NoFollow: true}); serr == nil {
				return nil, errcode.New(errcode.InvalidArgument, "%s is not a published checkpoint: it has no %s", p, ManifestName)
			}
			return nil, errcode.New(errcode.NotFound, "no checkpoint at %s", p)
		}
		return nil, err
	}
	m, err := ParseManifest(b)
	if err != nil {
		return nil, errcode.New(errcode.CodeOf(err), "%s: %v", p, err)
	}
	if m.Format != Format || m.Version != Version {
		return nil, errcode.New(errcode.InvalidArgument, "%s/%s: not an %s manifest", p, ManifestName, Format)
	}
	return m, nil
}

// Remove deletes a published checkpoint. If DIR/latest named it, latest
// moves to the newest checkpoint left (or is removed when none is left).
func (s *Store) Remove(ctx context.Context, p string) error {
	p = path.Clean(p)
	if _, err := s.Inspect(ctx, p); err != nil {
		return err
	}
	// Out of sight first (one rename: readers see it whole or not at
	// all), then deleted; a remover that dies leaves a pending directory
	// for Reclaim.
	dir := path.Dir(p)
	aside := pendingPath(dir, path.Base(p))
	if err := s.c.Rename(ctx, s.u, meta.P(p), meta.P(aside), meta.RenameNoReplace); err != nil {
		return err
	}
	if err := s.c.RemoveAll(ctx, s.u, meta.P(aside)); err != nil {
		return err
	}
	latest, err := s.pointer(ctx, dir)
	if err != nil || latest != p {
		return nil
	}
	left, err := s.List(ctx, dir)
	if err != nil {
		return err
	}
	if len(left) == 0 {
		if err := s.c.Remove(ctx, s.u, meta.P(path.Join(dir, latestName))); err != nil && !errcode.Is(err, errcode.NotFound) {
			return err
		}
		return nil
	}
	return s.setLatest(ctx, dir, left[len(left)-1].Name)
}

// Retain removes the oldest published checkpoints of dir so that keep
// remain; the one latest names is never removed. It returns the removed
// paths.
func (s *Store) Retain(ctx context.Context, dir string, keep int) ([]string, error) {
	if keep <= 0 {
		return nil, errcode.New(errcode.InvalidArgument, "retain %s: keep %d, want at least 1", dir, keep)
	}
	all, err := s.List(ctx, dir)
	if err != nil {
		return nil, err
	}
	var removed []string
	for i := 0; i < len(all)-keep; i++ {
		if all[i].Latest {
			continue
		}
		if err := s.c.RemoveAll(ctx, s.u, meta.P(all[i].Path)); err != nil && !errcode.Is(err, errcode.NotFound) {
			return removed, err
		}
		removed = append(removed, all[i].Path)
	}
	return removed, nil
}

// Pending describes a save in progress (or abandoned).
type Pending struct {
	Path      string
	Name      string
	LeaseAge  time.Duration // since the lease was last renewed
	Reclaimed bool
}

// Reclaim removes the pending directories of dir whose lease has not been
// renewed for grace (negative: DefaultReclaimGrace; 0: every pending
// directory, live or not) (their writers died: a killed save never renews
// again); a pending directory without a lease file counts from its own
// modification time. It returns every pending directory it saw.
func (s *Store) Reclaim(ctx context.Context, dir string, grace time.Duration, progress io.Writer) ([]Pending, error) {
	if grace < 0 {
		grace = DefaultReclaimGrace
	}
	dir = path.Clean(dir)
	entries, err := s.c.ReadDir(ctx, s.u, meta.P(dir), true)
	if err != nil {
		return nil, err
	}
	var out []Pending
	for _, e := range entries {
		if e.Type != meta.TypeDir || !strings.HasPrefix(e.Name, pendingPrefix) {
			continue
		}
		p := path.Join(dir, e.Name)
		_, name, err := splitPending(p)
		if err != nil {
			continue
		}
		renewed := e.Inode.Mtime
		if lease, err := s.c.Stat(ctx, s.u, meta.P(path.Join(p, leaseName))); err == nil {
			renewed = lease.Mtime
		} else if !errcode.Is(err, errcode.NotFound) {
			return out, err
		}
		pd := Pending{Path: p, Name: name, LeaseAge: time.Since(renewed)}
		if pd.LeaseAge > grace {
			if progress != nil {
				_, _ = io.WriteString(progress, "removing "+p+" (lease not renewed for "+pd.LeaseAge.Round(time.Second).String()+")\n")
			}
			if err := s.c.RemoveAll(ctx, s.u, meta.P(p)); err != nil && !errcode.Is(err, errcode.NotFound) {
				return out, err
			}
			pd.Reclaimed = true
		}
		out = append(out, pd)
	}
	return out, nil
}

var errClosed = errors.New("already closed")
