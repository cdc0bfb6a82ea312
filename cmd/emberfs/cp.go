package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
)

func init() { subcommands = append(subcommands, newCpCmd) }

// cpBlock is the size of one read and one write of a copy: a chunk of the
// default layout, so writes go to storage whole.
const cpBlock = 4 << 20

func newCpCmd() *cobra.Command {
	var (
		recursive bool
		jobs      int
		progress  string
	)
	cf := &clusterFlags{}
	cmd := &cobra.Command{
		Use:   "cp [-r] [-j N] SRC... DST",
		Short: "Copy files between the local file system and EmberFS (emberfs:/path) without a mount",
		Long: `Copies files and, with -r, directory trees. EmberFS paths are written
emberfs:/path (or emberfs:///path); others are local. Files are copied -j at
a time; a progress bar is drawn on standard error when it is a terminal
(--progress=always forces it) and a summary line is printed at the end.
As with cp(1), a DST that is an existing directory receives SRC under its
own name, and several SRCs need an existing directory DST.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return fmt.Errorf("cp: missing %s (usage: emberfs %s)", map[bool]string{true: "DST", false: "SRC and DST"}[len(args) == 1], cmd.Use)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if jobs < 1 {
				return fmt.Errorf("cp: -j %d: need at least 1", jobs)
			}
			var showBar bool
			switch progress {
			case "auto":
				showBar = isTerminal(os.Stderr)
			case "always":
				showBar = true
			case "never":
			default:
				return fmt.Errorf("cp: --progress %q: want auto, always or never", progress)
			}
			ctx := cmd.Context()
			var c *client.Client
			for _, a := range args {
				if isEmberURI(a) {
					var err error
					if c, err = cf.connect(ctx, client.Config{}); err != nil {
						return err
					}
					defer c.Close()
					break
				}
			}
			local, ember := localFS{}, emberFS{c: c}
			side := func(a string) (cpFS, string) {
				if isEmberURI(a) {
					return ember, emberPath(a)
				}
				return local, a
			}
			dstFS, dst := side(args[len(args)-1])
			dstInfo, err := dstFS.stat(ctx, dst)
			dstIsDir := err == nil && dstInfo.dir
			if err != nil && !isNotExist(err) {
				return pathErr("cp", args[len(args)-1], err)
			}
			srcs := args[:len(args)-1]
			if len(srcs) > 1 && !dstIsDir {
				return fmt.Errorf("cp: %s is not an existing directory, and %d sources need one", args[len(args)-1], len(srcs))
			}
			plan := &cpPlan{}
			for _, a := range srcs {
				sfs, src := side(a)
				target := dst
				if dstIsDir {
					target = dstFS.join(dst, sfs.base(src))
				}
				if err := plan.add(ctx, sfs, src, dstFS, target, recursive); err != nil {
					return err
				}
			}
			return plan.run(ctx, cmd, jobs, showBar)
		},
	}
	cf.add(cmd)
	f := cmd.Flags()
	f.BoolVarP(&recursive, "recursive", "r", false, "copy directories and what they hold")
	f.IntVarP(&jobs, "jobs", "j", 4, "files copied in parallel")
	f.StringVar(&progress, "progress", "auto", "progress bar on stderr: auto (when a terminal), always, never")
	return cmd
}

// cpInfo is what a copy needs to know of a path.
type cpInfo struct {
	dir, regular bool
	size         int64
	mode         fs.FileMode
}

type cpEntry struct {
	name string
	info cpInfo
}

// cpFS is one side of a copy: the local file system or EmberFS.
type cpFS interface {
	stat(ctx context.Context, p string) (cpInfo, error)
	list(ctx context.Context, p string) ([]cpEntry, error)
	mkdir(ctx context.Context, p string) error
	open(ctx context.Context, p string) (io.ReaderAt, io.Closer, error)
	create(ctx context.Context, p string, mode fs.FileMode) (io.WriterAt, io.Closer, error)
	join(dir, name string) string
	base(p string) string
	name() string
}

func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errcode.Is(err, errcode.NotFound)
}

type localFS struct{}

func localInfo(fi fs.FileInfo) cpInfo {
	return cpInfo{dir: fi.IsDir(), regular: fi.Mode().IsRegular(), size: fi.Size(), mode: fi.Mode().Perm()}
}

func (localFS) stat(_ context.Context, p string) (cpInfo, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return cpInfo{}, err
	}
	return localInfo(fi), nil
}

func (localFS) list(_ context.Context, p string) ([]cpEntry, error) {
	des, err := os.ReadDir(p)
	if err != nil {
		return nil, err
	}
	out := make([]cpEntry, 0, len(des))
	for _, d := range des {
		// Follow symlinks, as cp -r -L would: a link's target is copied.
		fi, err := os.Stat(filepath.Join(p, d.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, cpEntry{name: d.Name(), info: localInfo(fi)})
	}
	return out, nil
}

func (localFS) mkdir(_ context.Context, p string) error { return os.MkdirAll(p, 0o755) }

func (localFS) open(_ context.Context, p string) (io.ReaderAt, io.Closer, error) {
	f, err := os.Open(p)
	return f, f, err
}

func (localFS) create(_ context.Context, p string, mode fs.FileMode) (io.WriterAt, io.Closer, error) {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	return f, f, err
}

func (localFS) join(dir, name string) string { return filepath.Join(dir, name) }
func (localFS) base(p string) string         { return filepath.Base(p) }
func (localFS) name() string                 { return "" }

type emberFS struct{ c *client.Client }

func emberInfo(n *meta.Inode) cpInfo {
	return cpInfo{dir: n.Type == meta.TypeDir, regular: n.Type == meta.TypeFile, size: int64(n.Size), mode: fs.FileMode(n.Mode & 0o777)}
}

func (e emberFS) stat(ctx context.Context, p string) (cpInfo, error) {
	n, err := e.c.Stat(ctx, cliUser(), meta.P(p))
	if err != nil {
		return cpInfo{}, err
	}
	return emberInfo(&n), nil
}

func (e emberFS) list(ctx context.Context, p string) ([]cpEntry, error) {
	ents, err := e.c.ReadDir(ctx, cliUser(), meta.P(p), true)
	if err != nil {
		return nil, err
	}
	out := make([]cpEntry, 0, len(ents))
	for _, d := range ents {
		n := d.Inode
		if d.Type == meta.TypeSymlink || n == nil {
			// Follow symlinks, as the local side does.
			st, err := e.c.Stat(ctx, cliUser(), meta.P(path.Join(p, d.Name)))
			if err != nil {
				return nil, err
			}
			n = &st
		}
		out = append(out, cpEntry{name: d.Name, info: emberInfo(n)})
	}
	return out, nil
}

func (e emberFS) mkdir(ctx context.Context, p string) error {
	_, err := e.c.Mkdir(ctx, cliUser(), meta.P(p), 0o755, true)
	if errcode.Is(err, errcode.AlreadyExists) {
		return nil
	}
	return err
}

func (e emberFS) open(ctx context.Context, p string) (io.ReaderAt, io.Closer, error) {
	f, err := e.c.Open(ctx, cliUser(), meta.P(p), os.O_RDONLY, 0)
	return f, f, err
}

func (e emberFS) create(ctx context.Context, p string, mode fs.FileMode) (io.WriterAt, io.Closer, error) {
	f, err := e.c.Open(ctx, cliUser(), meta.P(p), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, uint32(mode.Perm()))
	return f, f, err
}

func (emberFS) join(dir, name string) string { return path.Join(dir, name) }
func (emberFS) base(p string) string         { return path.Base(p) }
func (emberFS) name() string                 { return "emberfs:" }

// cpPlan is the work of one cp: directories to make (parents first) and
// files to copy, found before any byte moves so the progress bar knows
// the total.
type cpPlan struct {
	dirs  []cpDir
	files []cpFile
	total int64
}

type cpDir struct {
	fs cpFS
	p  string
}

type cpFile struct {
	sfs, dfs cpFS
	src, dst string
	size     int64
	mode     fs.FileMode
}

func (pl *cpPlan) add(ctx context.Context, sfs cpFS, src string, dfs cpFS, dst string, recursive bool) error {
	info, err := sfs.stat(ctx, src)
	if err != nil {
		return pathErr("cp", sfs.name()+src, err)
	}
	if info.dir {
		if !recursive {
			return fmt.Errorf("cp: %s%s is a directory (use -r)", sfs.name(), src)
		}
		pl.dirs = append(pl.dirs, cpDir{dfs, dst})
		ents, err := sfs.list(ctx, src)
		if err != nil {
			return pathErr("cp", sfs.name()+src, err)
		}
		for _, e := range ents {
			if err := pl.add(ctx, sfs, sfs.join(src, e.name), dfs, dfs.join(dst, e.name), true); err != nil {
				return err
			}
		}
		return nil
	}
	if !info.regular {
		return fmt.Errorf("cp: %s%s is not a regular file", sfs.name(), src)
	}
	pl.files = append(pl.files, cpFile{sfs: sfs, dfs: dfs, src: src, dst: dst, size: info.size, mode: info.mode})
	pl.total += info.size
	return nil
}

func (pl *cpPlan) run(ctx context.Context, cmd *cobra.Command, jobs int, showBar bool) error {
	for _, d := range pl.dirs {
		if err := d.fs.mkdir(ctx, d.p); err != nil {
			return pathErr("cp: mkdir", d.fs.name()+d.p, err)
		}
	}
	var (
		done      atomic.Int64 // bytes copied
		filesDone atomic.Int64
		mu        sync.Mutex
		failed    []error
		wg        sync.WaitGroup
	)
	start := time.Now()
	stopBar := make(chan struct{})
	barDone := make(chan struct{})
	go func() {
		defer close(barDone)
		if !showBar {
			return
		}
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				drawBar(cmd.ErrOrStderr(), done.Load(), pl.total, filesDone.Load(), len(pl.files), time.Since(start), false)
			case <-stopBar:
				drawBar(cmd.ErrOrStderr(), done.Load(), pl.total, filesDone.Load(), len(pl.files), time.Since(start), true)
				return
			}
		}
	}()
	work := make(chan cpFile)
	for range min(jobs, max(len(pl.files), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, cpBlock)
			for f := range work {
				if err := copyFile(ctx, f, buf, &done); err != nil {
					mu.Lock()
					failed = append(failed, err)
					mu.Unlock()
					continue
				}
				filesDone.Add(1)
			}
		}()
	}
	for _, f := range pl.files {
		work <- f
	}
	close(work)
	wg.Wait()
	close(stopBar)
	<-barDone
	el := time.Since(start)
	fmt.Fprintf(cmd.OutOrStdout(), "copied %d files, %d dirs, %s in %s (%s/s)%s\n", filesDone.Load(), len(pl.dirs),
		bytesString(uint64(done.Load())), el.Round(time.Millisecond), bytesString(uint64(float64(done.Load())/max(el.Seconds(), 1e-9))),
		map[bool]string{true: fmt.Sprintf(", %d failed", len(failed)), false: ""}[len(failed) > 0])
	if len(failed) == 0 {
		return nil
	}
	for _, err := range failed {
		fmt.Fprintln(cmd.ErrOrStderr(), "emberfs:", err)
	}
	return errAlreadyReported{fmt.Errorf("cp: %d of %d files failed", len(failed), len(pl.files))}
}

// copyFile copies one file block by block, adding each block to done.
func copyFile(ctx context.Context, f cpFile, buf []byte, done *atomic.Int64) error {
	r, rc, err := f.sfs.open(ctx, f.src)
	if err != nil {
		return pathErr("cp: open", f.sfs.name()+f.src, err)
	}
	defer rc.Close()
	w, wc, err := f.dfs.create(ctx, f.dst, f.mode)
	if err != nil {
		return pathErr("cp: create", f.dfs.name()+f.dst, err)
	}
	var off int64
	for off < f.size {
		n, rerr := r.ReadAt(buf[:min(int64(len(buf)), f.size-off)], off)
		if n > 0 {
			if _, werr := w.WriteAt(buf[:n], off); werr != nil {
				wc.Close()
				return pathErr("cp: write", f.dfs.name()+f.dst, werr)
			}
			off += int64(n)
			done.Add(int64(n))
		}
		if rerr == io.EOF {
			break // the source shrank while we copied: copy what is there
		}
		if rerr != nil {
			wc.Close()
			return pathErr("cp: read", f.sfs.name()+f.src, rerr)
		}
		if err := ctx.Err(); err != nil {
			wc.Close()
			return err
		}
	}
	if err := wc.Close(); err != nil {
		return pathErr("cp: close", f.dfs.name()+f.dst, err)
	}
	return nil
}

// drawBar redraws the progress line in place ("\r"); the final draw ends
// the line.
func drawBar(w io.Writer, done, total, files int64, nfiles int, el time.Duration, final bool) {
	const width = 30
	frac := 1.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	fill := int(frac * width)
	bar := strings.Repeat("=", fill) + strings.Repeat(" ", width-fill)
	rate := float64(done) / max(el.Seconds(), 1e-9)
	end := ""
	if final {
		end = "\n"
	}
	fmt.Fprintf(w, "\r[%s] %3.0f%% %s/%s %d/%d files %s/s  %s", bar, frac*100, bytesString(uint64(done)), bytesString(uint64(total)),
		files, nfiles, bytesString(uint64(rate)), end)
}

// isTerminal reports whether f is a character device (a terminal), where
// a redrawn progress line makes sense.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
