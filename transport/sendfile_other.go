//go:build !linux

package transport

import (
	"io"
	"net"
	"os"
)

// sendFileRegion copies through user space where sendfile with an explicit
// offset is not wired up (EmberFS servers run on Linux).
func sendFileRegion(conn net.Conn, f *os.File, off, length int64) (int64, bool, error) {
	n, err := copyRegion(conn, f, off, length)
	return n, false, err
}

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

type writerOnly struct{ io.Writer }
