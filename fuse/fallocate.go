package fuse

import (
	"context"
	"syscall"

	"github.com/emberfs/emberfs/service/meta"
)

// fallocate(2) modes (linux/falloc.h).
const (
	fallocKeepSize  = 0x01 // FALLOC_FL_KEEP_SIZE
	fallocPunchHole = 0x02 // FALLOC_FL_PUNCH_HOLE
	fallocZeroRange = 0x10 // FALLOC_FL_ZERO_RANGE
)

// zeros is what punched and zeroed ranges are written with (never written to).
var zeros = make([]byte, MaxWrite)

// Allocate serves fallocate(2). Storage allocates a chunk when it is first
// written and has no reservations, so:
//   - mode 0 extends the file to off+size (the new range reads as zeros) and
//     reserves nothing: a later write can still fail with ENOSPC;
//   - FALLOC_FL_KEEP_SIZE alone changes nothing;
//   - FALLOC_FL_PUNCH_HOLE|KEEP_SIZE and FALLOC_FL_ZERO_RANGE write zeros
//     over the range (within the file for a punch; zero-range extends it
//     unless KEEP_SIZE) and sync them, so the range reads as zeros on every
//     client once fallocate returns, across a crash too. No space is freed:
//     chunks are not dropped, even where the range covers them whole;
//   - every other mode (COLLAPSE_RANGE, INSERT_RANGE, UNSHARE_RANGE, a punch
//     without KEEP_SIZE) is EOPNOTSUPP, as on a file system without it.
func (h *fileHandle) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	switch mode {
	case 0, fallocKeepSize, fallocPunchHole | fallocKeepSize, fallocZeroRange, fallocZeroRange | fallocKeepSize:
	default:
		return syscall.EOPNOTSUPP
	}
	if !h.writable {
		return syscall.EBADF
	}
	c := opCtx(ctx)
	f, err := h.file(c)
	if err != nil {
		return h.fsys.errno("fallocate", err)
	}
	end := off + size
	if end < off || end > 1<<62 {
		return syscall.EFBIG
	}
	cur := uint64(max(f.Size(), 0))
	if mode&(fallocPunchHole|fallocZeroRange) != 0 {
		if h.appends {
			// The handle's writes all go to the end: zero through a
			// file of our own (the kernel checked the caller may write).
			if err := f.Flush(); err != nil {
				return h.fsys.errno("fallocate", err)
			}
			zf, err := h.fsys.openBounded(c, root, meta.PathAt{Parent: h.id}, syscall.O_WRONLY, 0)
			if err != nil {
				return h.fsys.errno("fallocate", err)
			}
			defer zf.Close()
			f = zf
		}
		to := end
		if mode&fallocKeepSize != 0 {
			to = min(end, cur)
		}
		for at := off; at < to; {
			n := min(to-at, uint64(len(zeros)))
			if _, err := f.WriteAt(zeros[:n], int64(at)); err != nil {
				return h.fsys.errno("fallocate", err)
			}
			at += n
		}
		if err := f.Sync(); err != nil {
			return h.fsys.errno("fallocate", err)
		}
		return 0
	}
	if mode&fallocKeepSize == 0 && end > cur {
		if err := f.Truncate(int64(end)); err != nil {
			return h.fsys.errno("fallocate", err)
		}
		return h.fsys.errno("fallocate", f.Sync())
	}
	return 0
}
