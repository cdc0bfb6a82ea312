package posix

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// helperEnv switches the test binary into helper mode: it changes to the
// directory named by its argument, reads script operations from stdin and
// prints one normalized result per operation.
const helperEnv = "EMBERFS_POSIX_HELPER"

// session is a helper's state: descriptors opened by fopen, by name, for
// the rest of the batch.
type session struct {
	fds map[string]int
}

// operation runs one script operation. It returns the result detail
// ("" prints as OK) or the error whose errno is printed. Argument errors
// (a script bug) are returned as badArgs and stop the test.
type operation struct {
	args int // the minimum number of arguments
	run  func(s *session, a []string) (string, error)
}

type badArgs struct{ msg string }

func (b badArgs) Error() string { return b.msg }

// operations is the vocabulary of the scripts. Each takes paths relative to
// the case directory; modes are octal; owners are user and group names.
var operations = map[string]operation{
	"mkdir":   {2, func(s *session, a []string) (string, error) { return "", unix.Mkdir(a[0], octal(a[1])) }},
	"rmdir":   {1, func(s *session, a []string) (string, error) { return "", unix.Rmdir(a[0]) }},
	"unlink":  {1, func(s *session, a []string) (string, error) { return "", unix.Unlink(a[0]) }},
	"rename":  {2, func(s *session, a []string) (string, error) { return "", unix.Rename(a[0], a[1]) }},
	"link":    {2, func(s *session, a []string) (string, error) { return "", unix.Link(a[0], a[1]) }},
	"symlink": {2, func(s *session, a []string) (string, error) { return "", unix.Symlink(a[0], a[1]) }},
	"readlink": {1, func(s *session, a []string) (string, error) {
		buf := make([]byte, 4096)
		n, err := unix.Readlink(a[0], buf)
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}},
	// create PATH MODE: open(O_CREAT|O_EXCL|O_WRONLY) and close.
	"create": {2, func(s *session, a []string) (string, error) {
		fd, err := unix.Open(a[0], unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, octal(a[1]))
		if err != nil {
			return "", err
		}
		return "", unix.Close(fd)
	}},
	// open PATH FLAGS [MODE]: open and close; FLAGS as in openFlags.
	"open": {2, func(s *session, a []string) (string, error) {
		fd, err := unix.Open(a[0], openFlags(a[1]), octal(arg(a, 2, "0")))
		if err != nil {
			return "", err
		}
		return "", unix.Close(fd)
	}},
	// fopen NAME PATH FLAGS [MODE]: open and keep the descriptor as NAME.
	"fopen": {3, func(s *session, a []string) (string, error) {
		fd, err := unix.Open(a[1], openFlags(a[2]), octal(arg(a, 3, "0")))
		if err != nil {
			return "", err
		}
		s.fds[a[0]] = fd
		return "", nil
	}},
	"fclose": {1, func(s *session, a []string) (string, error) {
		fd, err := s.fd(a[0])
		if err != nil {
			return "", err
		}
		delete(s.fds, a[0])
		return "", unix.Close(fd)
	}},
	// fwrite NAME DATA: write(2) at the descriptor's offset.
	"fwrite": {2, func(s *session, a []string) (string, error) {
		fd, err := s.fd(a[0])
		if err != nil {
			return "", err
		}
		n, err := unix.Write(fd, []byte(a[1]))
		return fmt.Sprint(n), err
	}},
	// fread NAME N: read(2) up to N bytes, printed.
	"fread": {2, func(s *session, a []string) (string, error) {
		fd, err := s.fd(a[0])
		if err != nil {
			return "", err
		}
		buf := make([]byte, atoi(a[1]))
		n, err := unix.Read(fd, buf)
		if err != nil {
			return "", err
		}
		return strconv.Quote(string(buf[:n])), nil
	}},
	"ftruncate": {2, func(s *session, a []string) (string, error) {
		fd, err := s.fd(a[0])
		if err != nil {
			return "", err
		}
		return "", unix.Ftruncate(fd, int64(atoi(a[1])))
	}},
	"fchmod": {2, func(s *session, a []string) (string, error) {
		fd, err := s.fd(a[0])
		if err != nil {
			return "", err
		}
		return "", unix.Fchmod(fd, octal(a[1]))
	}},
	"fstat": {1, func(s *session, a []string) (string, error) {
		fd, err := s.fd(a[0])
		if err != nil {
			return "", err
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return "", err
		}
		return describe(&st), nil
	}},
	// write PATH DATA: open(O_WRONLY|O_TRUNC), write, close.
	"write": {2, func(s *session, a []string) (string, error) {
		return "", writeFile(a[0], unix.O_WRONLY|unix.O_TRUNC, a[1])
	}},
	// append PATH DATA: open(O_WRONLY|O_APPEND), write, close.
	"append": {2, func(s *session, a []string) (string, error) {
		return "", writeFile(a[0], unix.O_WRONLY|unix.O_APPEND, a[1])
	}},
	// read PATH: the whole content, quoted.
	"read": {1, func(s *session, a []string) (string, error) {
		b, err := os.ReadFile(a[0])
		if err != nil {
			return "", err
		}
		return strconv.Quote(string(b)), nil
	}},
	"truncate": {2, func(s *session, a []string) (string, error) { return "", unix.Truncate(a[0], int64(atoi(a[1]))) }},
	"chmod":    {2, func(s *session, a []string) (string, error) { return "", unix.Chmod(a[0], octal(a[1])) }},
	// chown PATH USER GROUP (follows symlinks); -1 leaves one unchanged.
	"chown": {3, func(s *session, a []string) (string, error) {
		uid, gid, err := owners(a[1], a[2])
		if err != nil {
			return "", err
		}
		return "", unix.Chown(a[0], uid, gid)
	}},
	"lchown": {3, func(s *session, a []string) (string, error) {
		uid, gid, err := owners(a[1], a[2])
		if err != nil {
			return "", err
		}
		return "", unix.Lchown(a[0], uid, gid)
	}},
	// utimens PATH ATIME MTIME [nofollow]: each time is now, omit or
	// SECONDS[.NANOSECONDS].
	"utimens": {3, func(s *session, a []string) (string, error) {
		at, err := timespec(a[1])
		if err != nil {
			return "", err
		}
		mt, err := timespec(a[2])
		if err != nil {
			return "", err
		}
		flags := 0
		if arg(a, 3, "") == "nofollow" {
			flags = unix.AT_SYMLINK_NOFOLLOW
		}
		return "", unix.UtimesNanoAt(unix.AT_FDCWD, a[0], []unix.Timespec{at, mt}, flags)
	}},
	// mknod PATH TYPE MODE [MAJOR MINOR]: TYPE is fifo, sock, chr, blk or reg.
	"mknod": {3, func(s *session, a []string) (string, error) {
		var typ uint32
		switch a[1] {
		case "fifo":
			typ = unix.S_IFIFO
		case "sock":
			typ = unix.S_IFSOCK
		case "chr":
			typ = unix.S_IFCHR
		case "blk":
			typ = unix.S_IFBLK
		case "reg":
			typ = unix.S_IFREG
		default:
			return "", badArgs{"mknod: unknown type " + a[1]}
		}
		dev := unix.Mkdev(uint32(atoi(arg(a, 3, "0"))), uint32(atoi(arg(a, 4, "0"))))
		return "", unix.Mknod(a[0], typ|octal(a[2]), int(dev))
	}},
	"mkfifo": {2, func(s *session, a []string) (string, error) { return "", unix.Mkfifo(a[0], octal(a[1])) }},
	// stat PATH: lstat(2), normalized (describe).
	"stat": {1, func(s *session, a []string) (string, error) {
		var st unix.Stat_t
		if err := unix.Lstat(a[0], &st); err != nil {
			return "", err
		}
		return describe(&st), nil
	}},
	// gettimes PATH: atime and mtime exactly (lstat), for times a script
	// set explicitly.
	"gettimes": {1, func(s *session, a []string) (string, error) {
		var st unix.Stat_t
		if err := unix.Lstat(a[0], &st); err != nil {
			return "", err
		}
		return fmt.Sprintf("atime=%d.%09d mtime=%d.%09d", st.Atim.Sec, st.Atim.Nsec, st.Mtim.Sec, st.Mtim.Nsec), nil
	}},
	// statf PATH: stat(2), following a final symlink.
	"statf": {1, func(s *session, a []string) (string, error) {
		var st unix.Stat_t
		if err := unix.Stat(a[0], &st); err != nil {
			return "", err
		}
		return describe(&st), nil
	}},
	// access PATH MODE: MODE is a combination of r, w, x or f (F_OK).
	"access": {2, func(s *session, a []string) (string, error) {
		m := uint32(0)
		for _, c := range a[1] {
			switch c {
			case 'r':
				m |= unix.R_OK
			case 'w':
				m |= unix.W_OK
			case 'x':
				m |= unix.X_OK
			}
		}
		return "", unix.Faccessat(unix.AT_FDCWD, a[0], m, unix.AT_EACCESS)
	}},
	// readdir PATH: the names, sorted, without . and ..
	"readdir": {1, func(s *session, a []string) (string, error) {
		f, err := os.Open(a[0])
		if err != nil {
			return "", err
		}
		defer f.Close()
		names, err := f.Readdirnames(-1)
		if err != nil {
			return "", err
		}
		return "[" + strings.Join(sortedCopy(names), " ") + "]", nil
	}},
	// exec PATH: execve it (a file that exists only to be executed checks
	// the x permission; the result is the errno of execve or of the child).
	"exec": {1, func(s *session, a []string) (string, error) {
		p, err := os.StartProcess(a[0], []string{a[0]}, &os.ProcAttr{})
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				return "", pe.Err
			}
			return "", err
		}
		_, err = p.Wait()
		return "", err
	}},
}

func (s *session) fd(name string) (int, error) {
	fd, ok := s.fds[name]
	if !ok { // its fopen failed (printed there)
		return 0, unix.EBADF
	}
	return fd, nil
}

func arg(a []string, i int, def string) string {
	if i < len(a) {
		return a[i]
	}
	return def
}

func octal(s string) uint32 {
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		panic(badArgs{"bad octal mode " + s})
	}
	return uint32(v)
}

func atoi(s string) int {
	v, err := strconv.Atoi(s)
	if err != nil {
		panic(badArgs{"bad number " + s})
	}
	return v
}

func owners(u, g string) (int, int, error) {
	uid, err := lookupID(u, false)
	if err != nil {
		return 0, 0, badArgs{err.Error()}
	}
	gid, err := lookupID(g, true)
	if err != nil {
		return 0, 0, badArgs{err.Error()}
	}
	return uid, gid, nil
}

func timespec(s string) (unix.Timespec, error) {
	switch s {
	case "now":
		return unix.Timespec{Nsec: unix.UTIME_NOW}, nil
	case "omit":
		return unix.Timespec{Nsec: unix.UTIME_OMIT}, nil
	}
	sec, nsec, _ := strings.Cut(s, ".")
	ts := unix.Timespec{}
	var err error
	if ts.Sec, err = strconv.ParseInt(sec, 10, 64); err != nil {
		return ts, badArgs{"bad time " + s}
	}
	if nsec != "" {
		if ts.Nsec, err = strconv.ParseInt(nsec, 10, 64); err != nil {
			return ts, badArgs{"bad time " + s}
		}
	}
	return ts, nil
}

// openFlags parses a comma-separated list: r, w, rw, creat, excl, trunc,
// append, dir, nofollow, noatime, path, tmpfile.
func openFlags(s string) int {
	f := 0
	for _, name := range strings.Split(s, ",") {
		switch name {
		case "r":
			f |= unix.O_RDONLY
		case "w":
			f |= unix.O_WRONLY
		case "rw":
			f |= unix.O_RDWR
		case "creat":
			f |= unix.O_CREAT
		case "excl":
			f |= unix.O_EXCL
		case "trunc":
			f |= unix.O_TRUNC
		case "append":
			f |= unix.O_APPEND
		case "dir":
			f |= unix.O_DIRECTORY
		case "nofollow":
			f |= unix.O_NOFOLLOW
		case "noatime":
			f |= unix.O_NOATIME
		case "path":
			f |= unix.O_PATH
		case "tmpfile":
			f |= unix.O_TMPFILE
		case "nonblock":
			f |= unix.O_NONBLOCK
		default:
			panic(badArgs{"unknown open flag " + name})
		}
	}
	return f
}

func writeFile(p string, flags int, data string) error {
	fd, err := unix.Open(p, flags, 0)
	if err != nil {
		return err
	}
	if _, err := unix.Write(fd, []byte(data)); err != nil {
		unix.Close(fd)
		return err
	}
	return unix.Close(fd)
}

// describe normalizes a stat: type, permission bits (with setuid, setgid,
// sticky), link count, owner names, and the size of what is not a
// directory (directory sizes are the file system's own business) or the
// device numbers of a device node.
func describe(st *unix.Stat_t) string {
	var typ string
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		typ = "file"
	case unix.S_IFDIR:
		typ = "dir"
	case unix.S_IFLNK:
		typ = "symlink"
	case unix.S_IFIFO:
		typ = "fifo"
	case unix.S_IFSOCK:
		typ = "sock"
	case unix.S_IFCHR:
		typ = "chr"
	case unix.S_IFBLK:
		typ = "blk"
	default:
		typ = fmt.Sprintf("type%o", st.Mode&unix.S_IFMT)
	}
	s := fmt.Sprintf("%s %04o nlink=%d %s:%s", typ, st.Mode&0o7777, st.Nlink, uidName(st.Uid), gidName(st.Gid))
	switch typ {
	case "dir":
	case "chr", "blk":
		s += fmt.Sprintf(" rdev=%d,%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	default:
		s += fmt.Sprintf(" size=%d", st.Size)
	}
	return s
}

func errnoName(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if errno == 0 {
			return "OK"
		}
		if n := unix.ErrnoName(errno); n != "" {
			return n
		}
		return fmt.Sprintf("errno%d", int(errno))
	}
	return "error(" + err.Error() + ")"
}

// runHelper is the helper process: args[0] is the case directory.
func runHelper(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "helper: want the case directory as the only argument")
		return 2
	}
	if err := os.Chdir(args[0]); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 2
	}
	// Modes in scripts are exact.
	unix.Umask(0)
	s := &session{fds: map[string]int{}}
	sc := bufio.NewScanner(os.Stdin)
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		out, err := runOp(s, f)
		var bad badArgs
		if errors.As(err, &bad) {
			w.Flush()
			fmt.Fprintf(os.Stderr, "helper: %s: %s\n", sc.Text(), bad.msg)
			return 2
		}
		switch {
		case err != nil:
			fmt.Fprintln(w, errnoName(err))
		case out == "":
			fmt.Fprintln(w, "OK")
		default:
			fmt.Fprintln(w, "OK "+out)
		}
		w.Flush() // the driver waits for each result
	}
	return 0
}

func runOp(s *session, f []string) (out string, err error) {
	defer func() {
		if r := recover(); r != nil {
			b, ok := r.(badArgs)
			if !ok {
				panic(r)
			}
			err = b
		}
	}()
	op, ok := operations[f[0]]
	if !ok {
		return "", badArgs{"unknown operation " + f[0]}
	}
	if len(f)-1 < op.args {
		return "", badArgs{fmt.Sprintf("%s needs %d arguments", f[0], op.args)}
	}
	return op.run(s, f[1:])
}
