package transport

import (
	"io"
	"net"
	"os"
	"syscall"
)

// sendFileRegion sends length bytes of f starting at off to conn with the
// sendfile(2) system call, so file data goes from the page cache to the
// socket without passing through user space.
//
// Why not conn.ReadFrom(io.NewSectionReader(f, off, n))? Go's
// TCPConn.ReadFrom only uses sendfile when the source is an *os.File or an
// *io.LimitedReader around one, and it then sends from the file's shared
// seek position; an *io.SectionReader silently falls back to a user-space
// copy (net/sendfile.go, go1.26). Calling sendfile with an explicit offset
// pointer reads at off without touching the seek position, so concurrent
// responses from the same open file never race.
//
// It reports zeroCopy=false when it had to fall back to a plain copy (a
// file system or socket that refuses sendfile).
func sendFileRegion(conn net.Conn, f *os.File, off, length int64) (written int64, zeroCopy bool, err error) {
	if length == 0 {
		return 0, true, nil
	}
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		n, err := copyRegion(conn, f, off, length)
		return n, false, err
	}
	dst, err := tc.SyscallConn()
	if err != nil {
		return 0, false, err
	}
	src, err := f.SyscallConn()
	if err != nil {
		return 0, false, err
	}
	var serr error
	unsupported := false
	// src.Read keeps f's descriptor from being closed while we use it;
	// dst.Write waits (honouring the write deadline) whenever the socket
	// buffer is full and our callback reports EAGAIN.
	cerr := src.Read(func(sfd uintptr) bool {
		werr := dst.Write(func(dfd uintptr) bool {
			for written < length {
				pos := off + written
				chunk := min(length-written, 1<<30)
				n, e := syscall.Sendfile(int(dfd), int(sfd), &pos, int(chunk))
				if n > 0 {
					written += int64(n)
				}
				switch {
				case e == syscall.EAGAIN:
					return false // wait until writable
				case e == syscall.EINTR:
					continue
				case e == syscall.EINVAL || e == syscall.ENOSYS || e == syscall.EOPNOTSUPP:
					if written == 0 {
						unsupported = true
						return true
					}
					serr = e
					return true
				case e != nil:
					serr = e
					return true
				case n == 0:
					serr = io.ErrUnexpectedEOF // file shorter than the region
					return true
				}
			}
			return true
		})
		if serr == nil {
			serr = werr
		}
		return true
	})
	if unsupported {
		n, err := copyRegion(conn, f, off, length)
		return n, false, err
	}
	if serr == nil {
		serr = cerr
	}
	if serr != nil {
		return written, true, &os.SyscallError{Syscall: "sendfile", Err: serr}
	}
	return written, true, nil
}

// copyRegion is the portable fallback: a copy through a pooled buffer.
func copyRegion(w io.Writer, f *os.File, off, length int64) (int64, error) {
	if length == 0 {
		return 0, nil
	}
	buf := GetBuffer(min(int(length), 1<<20))
	defer PutBuffer(buf)
	n, err := io.CopyBuffer(writerOnly{w}, io.NewSectionReader(f, off, length), buf)
	if err == nil && n < length {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// writerOnly hides ReadFrom so io.CopyBuffer really uses our buffer.
type writerOnly struct{ io.Writer }
