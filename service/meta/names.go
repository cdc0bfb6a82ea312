package meta

import (
	"strings"

	"github.com/emberfs/emberfs/internal/errcode"
)

// POSIX limits (Linux values).
const (
	MaxNameLen    = 255
	MaxPathLen    = 4096
	MaxSymlinks   = 40 // symlinks followed in one resolution before ELOOP
	MaxLinks      = 65000
	MaxXattrName  = 255
	MaxXattrValue = 65536
)

func checkName(name string) error {
	switch {
	case name == "":
		return errNoEnt("empty name")
	case len(name) > MaxNameLen:
		return errcode.New(errcode.NameTooLong, "name of %d bytes exceeds %d", len(name), MaxNameLen)
	case strings.ContainsRune(name, '/'):
		return errInval("name %q contains '/'", name)
	case strings.IndexByte(name, 0) >= 0:
		return errInval("name %q contains NUL", name)
	}
	return nil
}

func checkPath(path string) error {
	if len(path) >= MaxPathLen {
		return errcode.New(errcode.NameTooLong, "path of %d bytes exceeds %d", len(path), MaxPathLen-1)
	}
	if strings.IndexByte(path, 0) >= 0 {
		return errInval("path %q contains NUL", path)
	}
	return nil
}

// splitPath breaks a path into components, dropping empty ones ("a//b");
// each component is checked against the name limits.
func splitPath(path string) ([]string, error) {
	if err := checkPath(path); err != nil {
		return nil, err
	}
	var out []string
	for c := range strings.SplitSeq(path, "/") {
		if c == "" {
			continue
		}
		if len(c) > MaxNameLen {
			return nil, errcode.New(errcode.NameTooLong, "path component of %d bytes exceeds %d", len(c), MaxNameLen)
		}
		out = append(out, c)
	}
	return out, nil
}
