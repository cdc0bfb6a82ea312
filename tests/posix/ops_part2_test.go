package posix

import (
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Operations of issue 14 part 2: renameat2 flags, extended attributes and
// advisory locks. They live in the same vocabulary (operations).
func init() {
	for name, op := range map[string]operation{
		// rename2 SRC DST FLAGS: renameat2 with FLAGS a comma list of
		// noreplace, exchange (or 0).
		"rename2": {3, func(s *session, a []string) (string, error) {
			var fl uint
			for _, f := range strings.Split(a[2], ",") {
				switch f {
				case "noreplace":
					fl |= unix.RENAME_NOREPLACE
				case "exchange":
					fl |= unix.RENAME_EXCHANGE
				case "0":
				default:
					panic(badArgs{"bad rename2 flag " + f})
				}
			}
			return "", unix.Renameat2(unix.AT_FDCWD, a[0], unix.AT_FDCWD, a[1], fl)
		}},
		// setxattr PATH NAME VALUE [create|replace] (lsetxattr: no follow).
		"setxattr": {3, func(s *session, a []string) (string, error) {
			fl := 0
			switch arg(a, 3, "") {
			case "create":
				fl = unix.XATTR_CREATE
			case "replace":
				fl = unix.XATTR_REPLACE
			case "":
			default:
				panic(badArgs{"bad setxattr flag " + a[3]})
			}
			return "", unix.Lsetxattr(a[0], a[1], []byte(a[2]), fl)
		}},
		// getxattr PATH NAME: the value, quoted.
		"getxattr": {2, func(s *session, a []string) (string, error) {
			buf := make([]byte, 65536)
			n, err := unix.Lgetxattr(a[0], a[1], buf)
			if err != nil {
				return "", err
			}
			return strconv.Quote(string(buf[:n])), nil
		}},
		// listxattr PATH: the names, sorted (security.* left out: ext4
		// may carry labels the mount does not).
		"listxattr": {1, func(s *session, a []string) (string, error) {
			buf := make([]byte, 65536)
			n, err := unix.Llistxattr(a[0], buf)
			if err != nil {
				return "", err
			}
			var names []string
			for _, x := range strings.Split(string(buf[:n]), "\x00") {
				if x != "" && !strings.HasPrefix(x, "security.") {
					names = append(names, x)
				}
			}
			sort.Strings(names)
			return "[" + strings.Join(names, " ") + "]", nil
		}},
		"removexattr": {2, func(s *session, a []string) (string, error) {
			return "", unix.Lremovexattr(a[0], a[1])
		}},
		// lock NAME r|w|u START LEN: fcntl(F_SETLK) on a descriptor of fopen.
		"lock": {4, func(s *session, a []string) (string, error) {
			fd, err := s.fd(a[0])
			if err != nil {
				return "", err
			}
			l := unix.Flock_t{Type: lockType(a[1]), Start: int64(atoi(a[2])), Len: int64(atoi(a[3]))}
			return "", unix.FcntlFlock(uintptr(fd), unix.F_SETLK, &l)
		}},
		// getlk NAME r|w START LEN: F_GETLK; "free" or the type and range
		// of the lock in the way (its pid differs between runs).
		"getlk": {4, func(s *session, a []string) (string, error) {
			fd, err := s.fd(a[0])
			if err != nil {
				return "", err
			}
			l := unix.Flock_t{Type: lockType(a[1]), Start: int64(atoi(a[2])), Len: int64(atoi(a[3]))}
			if err := unix.FcntlFlock(uintptr(fd), unix.F_GETLK, &l); err != nil {
				return "", err
			}
			switch l.Type {
			case unix.F_UNLCK:
				return "free", nil
			case unix.F_RDLCK:
				return "r " + strconv.Itoa(int(l.Start)) + " " + strconv.Itoa(int(l.Len)), nil
			}
			return "w " + strconv.Itoa(int(l.Start)) + " " + strconv.Itoa(int(l.Len)), nil
		}},
		// flock NAME sh|ex|un: flock(2) with LOCK_NB.
		"flock": {2, func(s *session, a []string) (string, error) {
			fd, err := s.fd(a[0])
			if err != nil {
				return "", err
			}
			how := map[string]int{"sh": unix.LOCK_SH, "ex": unix.LOCK_EX, "un": unix.LOCK_UN}[a[1]]
			if how == 0 {
				panic(badArgs{"bad flock mode " + a[1]})
			}
			return "", unix.Flock(fd, how|unix.LOCK_NB)
		}},
	} {
		operations[name] = op
	}
}

func lockType(s string) int16 {
	switch s {
	case "r":
		return unix.F_RDLCK
	case "w":
		return unix.F_WRLCK
	case "u":
		return unix.F_UNLCK
	}
	panic(badArgs{"bad lock type " + s})
}
