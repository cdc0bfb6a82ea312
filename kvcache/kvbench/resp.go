package kvbench

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// respConn is the smallest Redis client the benchmark needs: SET, GET
// (into the caller's buffer, like get_into), EXISTS, pipelined EXISTS of
// many keys, PING and FLUSHALL over one connection. A few dozen lines of
// RESP keep the module free of a Redis dependency, and reading a bulk
// reply straight into a caller buffer gives Redis the same best case the
// EmberFS get_into path gets.
type respConn struct {
	c net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

func dialRESP(addr string) (*respConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &respConn{c: c, r: bufio.NewReaderSize(c, 64<<10), w: bufio.NewWriterSize(c, 64<<10)}, nil
}

func (r *respConn) Close() error { return r.c.Close() }

// writeCmd writes one command as a RESP array of bulk strings; large
// arguments go straight from the caller's slice.
func (r *respConn) writeCmd(args ...[]byte) error {
	fmt.Fprintf(r.w, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(r.w, "$%d\r\n", len(a))
		if _, err := r.w.Write(a); err != nil {
			return err
		}
		r.w.WriteString("\r\n")
	}
	return nil
}

func (r *respConn) line() ([]byte, error) {
	l, err := r.r.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	if len(l) < 3 || l[len(l)-2] != '\r' {
		return nil, fmt.Errorf("redis: malformed reply line %q", l)
	}
	return l[:len(l)-2], nil
}

// simple reads a +OK / :N / -ERR reply.
func (r *respConn) simple() (int64, error) {
	l, err := r.line()
	if err != nil {
		return 0, err
	}
	switch l[0] {
	case '+':
		return 0, nil
	case ':':
		return strconv.ParseInt(string(l[1:]), 10, 64)
	case '-':
		return 0, fmt.Errorf("redis: %s", l[1:])
	}
	return 0, fmt.Errorf("redis: unexpected reply %q", l)
}

// bulk reads a bulk reply into buf (allocating when buf is nil or too
// small); n is -1 for a nil reply (missing key).
func (r *respConn) bulk(buf []byte) ([]byte, int, error) {
	l, err := r.line()
	if err != nil {
		return nil, 0, err
	}
	if l[0] == '-' {
		return nil, 0, fmt.Errorf("redis: %s", l[1:])
	}
	if l[0] != '$' {
		return nil, 0, fmt.Errorf("redis: unexpected reply %q", l)
	}
	n, err := strconv.Atoi(string(l[1:]))
	if err != nil || n < 0 {
		return nil, -1, err
	}
	if len(buf) < n {
		buf = make([]byte, n)
	}
	if _, err := io.ReadFull(r.r, buf[:n]); err != nil {
		return nil, 0, err
	}
	if _, err := r.r.Discard(2); err != nil {
		return nil, 0, err
	}
	return buf[:n], n, nil
}

func (r *respConn) Set(key, value []byte) error {
	if err := r.writeCmd([]byte("SET"), key, value); err != nil {
		return err
	}
	if err := r.w.Flush(); err != nil {
		return err
	}
	_, err := r.simple()
	return err
}

// Get returns key's value in buf (or a new slice if buf is too small);
// found is false for a missing key.
func (r *respConn) Get(key, buf []byte) ([]byte, bool, error) {
	if err := r.writeCmd([]byte("GET"), key); err != nil {
		return nil, false, err
	}
	if err := r.w.Flush(); err != nil {
		return nil, false, err
	}
	v, n, err := r.bulk(buf)
	return v, n >= 0 && err == nil, err
}

func (r *respConn) Exists(key []byte) (bool, error) {
	if err := r.writeCmd([]byte("EXISTS"), key); err != nil {
		return false, err
	}
	if err := r.w.Flush(); err != nil {
		return false, err
	}
	n, err := r.simple()
	return n == 1, err
}

// LongestPrefix sends one EXISTS per key in a single pipelined write and
// counts the leading ones: per-key answers in one round trip, the fair
// Redis counterpart of kvcache's LongestPrefix (EXISTS k1 k2 ... only
// returns a count, which cannot find the first hole).
func (r *respConn) LongestPrefix(keys [][]byte) (int, error) {
	for _, k := range keys {
		if err := r.writeCmd([]byte("EXISTS"), k); err != nil {
			return 0, err
		}
	}
	if err := r.w.Flush(); err != nil {
		return 0, err
	}
	prefix, holed := 0, false
	for range keys {
		n, err := r.simple()
		if err != nil {
			return 0, err
		}
		if n != 1 {
			holed = true
		} else if !holed {
			prefix++
		}
	}
	return prefix, nil
}

func (r *respConn) do(args ...string) error {
	b := make([][]byte, len(args))
	for i, a := range args {
		b[i] = []byte(a)
	}
	if err := r.writeCmd(b...); err != nil {
		return err
	}
	if err := r.w.Flush(); err != nil {
		return err
	}
	_, err := r.simple()
	return err
}
