package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
)

// The mount-less file commands: ls, cat, mkdir, rm, du, stat (cp is in
// cp.go). Each connects through clusterFlags, acts as the calling user and
// takes EmberFS paths ("/a/b" or "emberfs:///a/b").

func init() {
	subcommands = append(subcommands, newLsCmd, newCatCmd, newMkdirCmd, newRmCmd, newDuCmd, newStatCmd)
}

// fsCommand builds a command whose body runs with a connected client.
func fsCommand(use, short string, args cobra.PositionalArgs, body func(ctx context.Context, cmd *cobra.Command, c *client.Client, args []string) error) (*cobra.Command, *clusterFlags) {
	cf := &clusterFlags{}
	cmd := &cobra.Command{
		Use: use, Short: short, Args: args,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.withClient(cmd, client.Config{}, func(ctx context.Context, c *client.Client) error {
				return body(ctx, cmd, c, args)
			})
		},
	}
	cf.add(cmd)
	return cmd, cf
}

func newLsCmd() *cobra.Command {
	var long bool
	cmd, _ := fsCommand("ls [-l] [PATH...]", "List EmberFS directories without a mount", cobra.ArbitraryArgs,
		func(ctx context.Context, cmd *cobra.Command, c *client.Client, args []string) error {
			if len(args) == 0 {
				args = []string{"/"}
			}
			out := cmd.OutOrStdout()
			o := newTabOut(out)
			var firstErr error
			for i, a := range args {
				p := emberPath(a)
				n, err := c.Stat(ctx, cliUser(), meta.P(p))
				if err != nil {
					firstErr = reportErr(cmd, firstErr, pathErr("ls", p, err))
					continue
				}
				if n.Type != meta.TypeDir {
					lsRow(o, long, path.Base(p), n.Type, &n)
					continue
				}
				ents, err := c.ReadDir(ctx, cliUser(), meta.P(p), long)
				if err != nil {
					firstErr = reportErr(cmd, firstErr, pathErr("ls", p, err))
					continue
				}
				if len(args) > 1 {
					if i > 0 {
						o.row("")
					}
					o.row(p + ":")
				}
				sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
				for _, e := range ents {
					lsRow(o, long, e.Name, e.Type, e.Inode)
				}
			}
			if err := o.flush(); err != nil {
				return err
			}
			return firstErr
		})
	cmd.Flags().BoolVarP(&long, "long", "l", false, "show type, mode, owner, size and modification time")
	return cmd
}

func lsRow(o *tabOut, long bool, name string, typ meta.FileType, n *meta.Inode) {
	if !long || n == nil {
		if typ == meta.TypeDir {
			name += "/"
		}
		o.row(name)
		return
	}
	if n.Type == meta.TypeSymlink {
		name += " -> " + n.Target
	}
	o.row(modeString(n), n.UID, n.GID, n.Size, n.Mtime.Local().Format("2006-01-02 15:04"), name)
}

// modeString is ls -l's mode column.
func modeString(n *meta.Inode) string {
	c := "-"
	switch n.Type {
	case meta.TypeDir:
		c = "d"
	case meta.TypeSymlink:
		c = "l"
	case meta.TypeFIFO:
		c = "p"
	case meta.TypeSocket:
		c = "s"
	case meta.TypeCharDev:
		c = "c"
	case meta.TypeBlockDev:
		c = "b"
	}
	const rwx = "rwxrwxrwx"
	b := []byte(c + "---------")
	for i := 0; i < 9; i++ {
		if n.Mode&(1<<(8-i)) != 0 {
			b[i+1] = rwx[i]
		}
	}
	return string(b)
}

// reportErr prints err on stderr and keeps the first error, so that one bad
// argument does not stop the others but the command still fails.
func reportErr(cmd *cobra.Command, first, err error) error {
	fmt.Fprintln(cmd.ErrOrStderr(), "emberfs:", err)
	if first == nil {
		return errAlreadyReported{err}
	}
	return first
}

// errAlreadyReported is an error already printed; main prints no more.
type errAlreadyReported struct{ error }

func newCatCmd() *cobra.Command {
	cmd, _ := fsCommand("cat PATH...", "Write EmberFS files to standard output", argsAtLeast(1, "PATH"),
		func(ctx context.Context, cmd *cobra.Command, c *client.Client, args []string) error {
			for _, a := range args {
				p := emberPath(a)
				f, err := c.Open(ctx, cliUser(), meta.P(p), os.O_RDONLY, 0)
				if err != nil {
					return pathErr("cat", p, err)
				}
				_, err = io.CopyBuffer(cmd.OutOrStdout(), io.NewSectionReader(f, 0, f.Size()), make([]byte, 4<<20))
				cerr := f.Close()
				if err != nil {
					return pathErr("cat", p, err)
				}
				if cerr != nil {
					return pathErr("cat", p, cerr)
				}
			}
			return nil
		})
	return cmd
}

func newMkdirCmd() *cobra.Command {
	var parents bool
	cmd, _ := fsCommand("mkdir [-p] PATH...", "Make EmberFS directories", argsAtLeast(1, "PATH"),
		func(ctx context.Context, cmd *cobra.Command, c *client.Client, args []string) error {
			for _, a := range args {
				p := emberPath(a)
				if _, err := c.Mkdir(ctx, cliUser(), meta.P(p), 0o755, parents); err != nil {
					if parents && errcode.Is(err, errcode.AlreadyExists) {
						continue
					}
					return pathErr("mkdir", p, err)
				}
			}
			return nil
		})
	cmd.Flags().BoolVarP(&parents, "parents", "p", false, "make missing parents; no error if it exists")
	return cmd
}

func newRmCmd() *cobra.Command {
	var recursive, force bool
	cmd, _ := fsCommand("rm [-r] [-f] PATH...", "Remove EmberFS files (and with -r, directories)", argsAtLeast(1, "PATH"),
		func(ctx context.Context, cmd *cobra.Command, c *client.Client, args []string) error {
			for _, a := range args {
				p := emberPath(a)
				if p == "/" {
					return errors.New("rm: refusing to remove /")
				}
				n, err := c.Stat(ctx, cliUser(), meta.PathAt{Path: p, NoFollow: true})
				if err != nil {
					if force && errcode.Is(err, errcode.NotFound) {
						continue
					}
					return pathErr("rm", p, err)
				}
				if n.Type == meta.TypeDir {
					if !recursive {
						return fmt.Errorf("rm %s: is a directory (use -r)", p)
					}
					err = c.RemoveAll(ctx, cliUser(), meta.P(p))
				} else {
					err = c.Remove(ctx, cliUser(), meta.P(p))
				}
				if err != nil {
					return pathErr("rm", p, err)
				}
			}
			return nil
		})
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "remove directories and what they hold")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "no error for missing paths")
	return cmd
}

func newDuCmd() *cobra.Command {
	var human bool
	cmd, _ := fsCommand("du [-h] [PATH...]", "Sum the file sizes under EmberFS paths", cobra.ArbitraryArgs,
		func(ctx context.Context, cmd *cobra.Command, c *client.Client, args []string) error {
			if len(args) == 0 {
				args = []string{"/"}
			}
			for _, a := range args {
				p := emberPath(a)
				var t duTotal
				if err := duWalk(ctx, c, p, &t); err != nil {
					return pathErr("du", p, err)
				}
				size := fmt.Sprint(t.bytes)
				if human {
					size = bytesString(t.bytes)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s\t%d files\t%d dirs\t%s\n", size, t.files, t.dirs, p)
			}
			return nil
		})
	cmd.Flags().BoolVarP(&human, "human-readable", "h", false, "sizes in KiB, MiB, GiB")
	cmd.Flags().Bool("help", false, "help for du")
	return cmd
}

type duTotal struct{ bytes, files, dirs uint64 }

// duWalk sums what lies under p, one listing (with attributes) per
// directory.
func duWalk(ctx context.Context, c *client.Client, p string, t *duTotal) error {
	n, err := c.Stat(ctx, cliUser(), meta.PathAt{Path: p, NoFollow: true})
	if err != nil {
		return err
	}
	if n.Type != meta.TypeDir {
		if n.Type == meta.TypeFile {
			t.files++
			t.bytes += n.Size
		}
		return nil
	}
	t.dirs++
	return duDir(ctx, c, p, t)
}

func duDir(ctx context.Context, c *client.Client, p string, t *duTotal) error {
	ents, err := c.ReadDir(ctx, cliUser(), meta.P(p), true)
	if err != nil {
		return err
	}
	for _, e := range ents {
		switch {
		case e.Type == meta.TypeDir:
			t.dirs++
			if err := duDir(ctx, c, path.Join(p, e.Name), t); err != nil {
				return err
			}
		case e.Type == meta.TypeFile && e.Inode != nil:
			t.files++
			t.bytes += e.Inode.Size
		}
	}
	return nil
}

func newStatCmd() *cobra.Command {
	cmd, _ := fsCommand("stat PATH...", "Print the attributes of EmberFS paths", argsAtLeast(1, "PATH"),
		func(ctx context.Context, cmd *cobra.Command, c *client.Client, args []string) error {
			w := cmd.OutOrStdout()
			for _, a := range args {
				p := emberPath(a)
				n, err := c.Stat(ctx, cliUser(), meta.PathAt{Path: p, NoFollow: true})
				if err != nil {
					return pathErr("stat", p, err)
				}
				fmt.Fprintf(w, "  path: %s\n  type: %s\n inode: %d\n  size: %d\n  mode: %s (%04o)\n   uid: %d\n   gid: %d\n nlink: %d\n",
					p, n.Type, n.ID, n.Size, modeString(&n), n.Mode, n.UID, n.GID, n.Nlink)
				for _, tm := range []struct {
					name string
					t    time.Time
				}{{"atime", n.Atime}, {"mtime", n.Mtime}, {"ctime", n.Ctime}} {
					fmt.Fprintf(w, " %s: %s\n", tm.name, tm.t.Local().Format(time.RFC3339Nano))
				}
				if n.Type == meta.TypeFile {
					fmt.Fprintf(w, "layout: chain table %d, chunk %s, stripe %d\n", n.Layout.ChainTable, bytesString(uint64(n.Layout.ChunkSize)), n.Layout.StripeSize)
				}
				if n.Type == meta.TypeSymlink {
					fmt.Fprintf(w, "target: %s\n", n.Target)
				}
			}
			return nil
		})
	return cmd
}
