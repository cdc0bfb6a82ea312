package fuse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/emberfs/emberfs/service/meta"
)

// MaxWrite is the largest read or write request the kernel sends (1 MiB,
// the most Linux accepts since 4.20).
const MaxWrite = 1 << 20

// Options configure a mount; the zero value is a sane default.
type Options struct {
	// WritebackCache lets the kernel buffer writes in the page cache and
	// send them in large batches (faster small writes; data reaches EmberFS
	// on flush, fsync, close or memory pressure, as with a local disk).
	WritebackCache bool
	// DirectIO bypasses the page cache for file data: every read and write
	// goes to EmberFS (coherent across clients, no double caching).
	DirectIO bool
	// OwnerOnly restricts the mount to the user who mounted it (and root).
	// By default every local user may use it (allow_other), with the
	// kernel checking permissions (default_permissions) as on a local file
	// system: jobs running under their own uids share one mount. A user
	// other than root may grant allow_other only where /etc/fuse.conf says
	// user_allow_other; elsewhere such a mount is owner-only.
	OwnerOnly bool
	// Debug logs every FUSE request and reply.
	Debug bool
	// EntryTimeout, AttrTimeout and NegativeTimeout are how long the kernel
	// caches names, attributes and failed lookups. 0 picks the default
	// (DefaultEntryTimeout, ...); a negative value disables that cache.
	// Whatever the attribute timeout, open(2) re-reads the attributes
	// (close-to-open consistency, docs/fuse.md).
	EntryTimeout    time.Duration
	AttrTimeout     time.Duration
	NegativeTimeout time.Duration
	// MaxWrite caps request size (default and maximum: MaxWrite).
	MaxWrite int
	// FsName is the source shown by mount(8) and df (default "emberfs").
	FsName string
	// MetaTimeout bounds every metadata call a request makes (default
	// DefaultMetaTimeout): past it the system call fails with ETIMEDOUT
	// instead of hanging while a meta server is hung. Mount's own check
	// that meta answers is bounded by it too.
	MetaTimeout time.Duration
	// ReadOnly mounts read-only (MS_RDONLY): every change fails with EROFS
	// in the kernel, before it reaches EmberFS.
	ReadOnly bool
	Logger   *slog.Logger
}

// Kernel cache defaults. Names and attributes are cached long enough that a
// stat after a create or a listing is answered by the kernel; what another
// client changes is seen at the next open (close-to-open, as NFS), or once
// the timeout passes for stat. A failed lookup is cached briefly: a name
// another client creates stays invisible here for up to that long.
const (
	DefaultEntryTimeout    = 10 * time.Second
	DefaultAttrTimeout     = 10 * time.Second
	DefaultNegativeTimeout = time.Second
)

func (o *Options) setDefaults() {
	if o.EntryTimeout == 0 {
		o.EntryTimeout = DefaultEntryTimeout
	}
	if o.AttrTimeout == 0 {
		o.AttrTimeout = DefaultAttrTimeout
	}
	if o.NegativeTimeout == 0 {
		o.NegativeTimeout = DefaultNegativeTimeout
	}
	for _, d := range []*time.Duration{&o.EntryTimeout, &o.AttrTimeout, &o.NegativeTimeout} {
		if *d < 0 {
			*d = 0
		}
	}
	if o.MaxWrite <= 0 || o.MaxWrite > MaxWrite {
		o.MaxWrite = MaxWrite
	}
	if o.MetaTimeout <= 0 {
		o.MetaTimeout = DefaultMetaTimeout
	}
	if o.FsName == "" {
		o.FsName = "emberfs"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Server is a mounted file system.
type Server struct {
	dir  string
	srv  *gofuse.Server
	fsys *fileSystem
	log  *slog.Logger
}

// Mount mounts the file system b serves at dir and serves it in the
// background until Unmount (or an external umount).
func Mount(ctx context.Context, b Backend, dir string, opts Options) (*Server, error) {
	opts.setDefaults()
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("mount point %s: %w", dir, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("mount point %s is not a directory", dir)
	}
	// Fail here, with a clear message, rather than on the first ls; a hung
	// meta server fails the mount after MetaTimeout.
	fsys := newFileSystem(b, opts)
	if _, err := fsys.meta.Stat(ctx, meta.User{}, meta.PathAt{Parent: meta.RootID}); err != nil {
		return nil, fmt.Errorf("mount %s: the metadata service did not answer within %v: %w", dir, opts.MetaTimeout, err)
	}
	allowOther := !opts.OwnerOnly && (os.Geteuid() == 0 || userAllowOther())
	mo := gofuse.MountOptions{
		AllowOther: allowOther,
		// The kernel checks permissions on its cached attributes (access(2),
		// exec, open); the metadata service checks again on every change.
		Options:      []string{"default_permissions"},
		MaxWrite:     opts.MaxWrite,
		MaxReadAhead: opts.MaxWrite,
		FsName:       opts.FsName,
		Name:         "emberfs",
		Debug:        opts.Debug,
		DirectMount:  os.Geteuid() == 0,
		// 1 MiB replies do not fit the default pipe, so splice only logs and falls back.
		DisableSplice: true,
		// flock and fcntl locks go to EmberFS (locks.go), so they hold
		// across mounts; without this the kernel keeps them per machine.
		EnableLocks: true,
	}
	if opts.ReadOnly {
		mo.Options = append(mo.Options, "ro")
	}
	if opts.Debug {
		mo.Logger = slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug)
	}
	if opts.WritebackCache {
		mo.ExtraCapabilities |= gofuse.CAP_WRITEBACK_CACHE
	}
	entry, attr, neg := opts.EntryTimeout, opts.AttrTimeout, opts.NegativeTimeout
	fo := &fs.Options{
		MountOptions:    mo,
		EntryTimeout:    &entry,
		AttrTimeout:     &attr,
		NegativeTimeout: &neg,
		// Mode 000 is a real mode here, not "unset".
		NullPermissions: true,
		RootStableAttr:  &fs.StableAttr{Ino: meta.RootID},
	}
	root := &node{fsys: fsys}
	// fs.Mount, with the bridge wrapped to release fcntl locks on FLUSH.
	srv, err := gofuse.NewServer(lockFS{RawFileSystem: fs.NewNodeFS(root, fo), fsys: fsys}, dir, &fo.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		// Serve ends by itself once the kernel side is gone.
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	s := &Server{dir: dir, srv: srv, fsys: fsys, log: opts.Logger.With("component", "fuse", "mount", dir)}
	s.log.Info("mounted", "writeback_cache", opts.WritebackCache, "direct_io", opts.DirectIO, "allow_other", allowOther, "read_only", opts.ReadOnly)
	return s, nil
}

// userAllowOther reports whether /etc/fuse.conf lets users other than
// root mount with allow_other (fusermount3 refuses it otherwise).
func userAllowOther() bool {
	b, err := os.ReadFile("/etc/fuse.conf")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "user_allow_other" {
			return true
		}
	}
	return false
}

// Dir is the mount point.
func (s *Server) Dir() string { return s.dir }

// Wait blocks until the file system is unmounted.
func (s *Server) Wait() { s.srv.Wait() }

// Unmount unmounts the file system. A busy mount is retried for a few
// seconds (a process may be closing its last file), then detached lazily:
// it disappears from the namespace at once and goes away when its last user
// does. Open handles are closed (lengths finalized) as the kernel releases
// them.
func (s *Server) Unmount() error {
	var err error
	for i := 0; i < 20; i++ {
		if err = s.srv.Unmount(); err == nil {
			s.log.Info("unmounted")
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	if derr := syscall.Unmount(s.dir, syscall.MNT_DETACH); derr == nil {
		s.log.Warn("mount was busy; detached lazily", "err", err)
		return nil
	}
	return fmt.Errorf("unmount %s: %w", s.dir, err)
}

// Unmount unmounts the FUSE file system at dir (what `emberfs umount` and
// `fusermount3 -u` do): umount(2) as root, else fusermount3/fusermount.
func Unmount(dir string) error {
	err := syscall.Unmount(dir, 0)
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("unmount %s: not a mount point", dir)
	}
	if errors.Is(err, syscall.EBUSY) {
		return fmt.Errorf("unmount %s: busy (a process has a file or directory open there)", dir)
	}
	for _, tool := range []string{"fusermount3", "fusermount"} {
		path, lerr := exec.LookPath(tool)
		if lerr != nil {
			continue
		}
		out, rerr := exec.Command(path, "-u", dir).CombinedOutput()
		if rerr == nil {
			return nil
		}
		return fmt.Errorf("unmount %s: %s -u: %v: %s", dir, tool, rerr, out)
	}
	return fmt.Errorf("unmount %s: %w (and no fusermount3 on PATH)", dir, err)
}
