package testutil

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// CopyTestBinary copies the running test binary into a new directory that
// every user may read and search, for tests that run it as a helper under
// other uids (the go build cache it runs from is root's alone). remove
// deletes the copy and its directory.
func CopyTestBinary(prefix string) (path string, remove func(), err error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	remove = func() { os.RemoveAll(dir) }
	path = filepath.Join(dir, "helper")
	if err = CopyFile(os.Args[0], path, 0o755); err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		remove()
		return "", nil, fmt.Errorf("copying the helper binary: %w", err)
	}
	return path, remove, nil
}

// CopyFile copies the file src to dst (created or truncated, with mode).
func CopyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
