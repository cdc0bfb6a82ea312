package pybind

import (
	"context"
	"strings"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
)

// StatFields is how many int64 values DirListing.CopyStats writes per
// entry, in this order: Ino, Mode, Nlink, Uid, Gid, Size, AtimeNs,
// MtimeNs, CtimeNs, HasStat. HasStat is 1 when the listing carried the
// entry's inode and 0 when the inode vanished between reading the entry
// and reading the inode (then only Ino and the type bits of Mode are set).
const StatFields = 10

// DirListing is a directory's entries with their stats, read with the
// listing itself (one meta RPC per page of up to 1024 entries, not one
// per entry). It crosses to Python in three calls whatever its size: Len,
// Names and CopyStats, because gopy hands a slice of structs over one
// element (one cgo call) at a time.
type DirListing struct {
	names []string
	stats []int64
}

// ReadDirStat lists directory path with every entry's stat.
func (c *Client) ReadDirStat(path string, e *Err) *DirListing {
	entries, err := c.c.ReadDir(context.Background(), c.who(), meta.P(path), true)
	if err != nil {
		e.set(err)
		return nil
	}
	l := &DirListing{names: make([]string, len(entries)), stats: make([]int64, 0, len(entries)*StatFields)}
	for i, d := range entries {
		l.names[i] = d.Name
		if d.Inode != nil {
			s := statOf(*d.Inode)
			l.stats = append(l.stats, int64(s.Ino), int64(s.Mode), int64(s.Nlink), int64(s.Uid), int64(s.Gid),
				s.Size, s.AtimeNs, s.MtimeNs, s.CtimeNs, 1)
			continue
		}
		l.stats = append(l.stats, int64(d.ID), int64(typeBits(d.Type)), 0, 0, 0, 0, 0, 0, 0, 0)
	}
	return l
}

func typeBits(t meta.FileType) int { return int(t.ModeType()) }

// Len is the number of entries.
func (l *DirListing) Len() int { return len(l.names) }

// Names is the entries' names in name order, each followed by a '/': the
// one byte besides NUL that no name holds, and NUL cannot be used because
// gopy passes strings to Python as C strings (NUL-terminated).
func (l *DirListing) Names() string {
	if len(l.names) == 0 {
		return ""
	}
	return strings.Join(l.names, "/") + "/"
}

// CopyStats writes Len()*StatFields native-endian int64 values (see
// StatFields) into the n bytes of memory at addr.
func (l *DirListing) CopyStats(addr uintptr, n int, e *Err) {
	want := len(l.stats) * 8
	if n != want {
		e.set(errcode.New(errcode.InvalidArgument, "stats buffer of %d bytes, want %d (%d entries)", n, want, len(l.names)))
		return
	}
	buf, err := buffer(addr, n)
	if err != nil {
		e.set(err)
		return
	}
	for i, v := range l.stats {
		u := uint64(v)
		b := buf[i*8 : i*8+8]
		// Native (little-endian on every platform the wheel is built for)
		// so Python reads them with array('q') without conversion.
		b[0], b[1], b[2], b[3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
		b[4], b[5], b[6], b[7] = byte(u>>32), byte(u>>40), byte(u>>48), byte(u>>56)
	}
}
