package fusetest

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// helperEnv switches the test binary into helper mode: it runs one system
// call named by its arguments and prints the errno (0 on success). The
// POSIX suite runs it with other credentials.
const helperEnv = "EMBERFS_FUSE_HELPER"

func runHelper(args []string) int {
	err := helperOp(args)
	var errno syscall.Errno
	switch {
	case err == nil:
	case errors.As(err, &errno):
	default:
		fmt.Println("-1")
		fmt.Printf("%v\n", err)
		return 2
	}
	fmt.Println(int(errno))
	return 0
}

func octal(s string) uint32 {
	v, _ := strconv.ParseUint(s, 8, 32)
	return uint32(v)
}

func num(s string) int {
	v, _ := strconv.Atoi(s)
	return v
}

func openFlags(s string) int {
	f := 0
	for _, name := range strings.Split(s, ",") {
		switch name {
		case "r":
			f |= syscall.O_RDONLY
		case "w":
			f |= syscall.O_WRONLY
		case "rw":
			f |= syscall.O_RDWR
		case "creat":
			f |= syscall.O_CREAT
		case "excl":
			f |= syscall.O_EXCL
		case "trunc":
			f |= syscall.O_TRUNC
		case "dir":
			f |= syscall.O_DIRECTORY
		case "nofollow":
			f |= syscall.O_NOFOLLOW
		}
	}
	return f
}

func helperOp(a []string) error {
	if len(a) < 2 {
		return fmt.Errorf("helper: need an operation and a path, got %q", a)
	}
	op, p := a[0], a[1]
	arg := func(i int) string {
		if i < len(a) {
			return a[i]
		}
		return ""
	}
	switch op {
	case "open":
		fd, err := syscall.Open(p, openFlags(arg(2)), octal(arg(3)))
		if err == nil {
			return syscall.Close(fd)
		}
		return err
	case "write":
		fd, err := syscall.Open(p, syscall.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		_, err = syscall.Write(fd, []byte("x"))
		return err
	case "read":
		fd, err := syscall.Open(p, syscall.O_RDONLY, 0)
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		_, err = syscall.Read(fd, make([]byte, 16))
		return err
	case "stat":
		var st syscall.Stat_t
		return syscall.Lstat(p, &st)
	case "mkdir":
		return syscall.Mkdir(p, octal(arg(2)))
	case "rmdir":
		return syscall.Rmdir(p)
	case "unlink":
		return syscall.Unlink(p)
	case "rename":
		return syscall.Rename(p, arg(2))
	case "link":
		return syscall.Link(p, arg(2))
	case "symlink":
		return syscall.Symlink(p, arg(2))
	case "chmod":
		return syscall.Chmod(p, octal(arg(2)))
	case "chown":
		return syscall.Lchown(p, num(arg(2)), num(arg(3)))
	case "truncate":
		return syscall.Truncate(p, int64(num(arg(2))))
	case "utimens-now":
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}, 0)
	case "utimens":
		ts := unix.Timespec{Sec: int64(num(arg(2)))}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, 0)
	case "mkfifo":
		return syscall.Mkfifo(p, 0o644)
	case "mknod-chr":
		return syscall.Mknod(p, syscall.S_IFCHR|0o644, 0x0101)
	case "setxattr":
		return unix.Setxattr(p, arg(2), []byte(arg(3)), 0)
	case "getxattr":
		_, err := unix.Getxattr(p, arg(2), make([]byte, 256))
		return err
	}
	return fmt.Errorf("helper: unknown operation %q", op)
}
