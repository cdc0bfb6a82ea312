package meta

import (
	"context"
	"errors"
	"syscall"

	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/kv"
)

// Every failure is an *errcode.Error whose Errno is what a POSIX file system
// returns in the same situation.

func errNoEnt(what string) error {
	return errcode.New(errcode.NotFound, "%s: no such file or directory", what)
}
func errExist(what string) error { return errcode.New(errcode.AlreadyExists, "%s: file exists", what) }
func errNotDir(what string) error {
	return errcode.New(errcode.NotDirectory, "%s: not a directory", what)
}
func errIsDir(what string) error { return errcode.New(errcode.IsDirectory, "%s: is a directory", what) }
func errNotEmpty(what string) error {
	return errcode.New(errcode.NotEmpty, "%s: directory not empty", what)
}
func errAccess(what, need string) error {
	return errcode.New(errcode.PermissionDenied, "%s: permission denied (needs %s)", what, need)
}

// errPerm is EPERM: the operation is reserved to the owner or to root.
func errPerm(format string, args ...any) error {
	return errcode.WithErrno(errcode.PermissionDenied, syscall.EPERM, format, args...)
}
func errInval(format string, args ...any) error {
	return errcode.New(errcode.InvalidArgument, format, args...)
}
func errNoData(name string) error {
	return errcode.WithErrno(errcode.NotFound, syscall.ENODATA, "xattr %q: no such attribute", name)
}

// mapKVError turns engine failures into errcode errors; errcode errors
// returned by transaction bodies pass through unchanged.
func mapKVError(err error) error {
	if err == nil {
		return nil
	}
	var e *errcode.Error
	if errors.As(err, &e) {
		return err
	}
	switch {
	case errors.Is(err, kv.ErrOutcomeUnknown):
		// Checked first: a commit cancelled in flight is also a context
		// error, but what the caller must know is that it may have landed.
		// EIO, not EAGAIN: repeating the operation is not safe in general.
		return errcode.WithErrno(errcode.Unavailable, syscall.EIO,
			"metadata commit outcome unknown (the operation may or may not have been applied): %v", err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, kv.ErrTransient):
		return errcode.New(errcode.Unavailable, "metadata store: transient errors persisted past the retry bound, nothing applied: %v", err)
	case errors.Is(err, kv.ErrTooManyRetries), errors.Is(err, kv.ErrConflict):
		return errcode.New(errcode.Conflict, "metadata transaction: %v", err)
	case errors.Is(err, kv.ErrTxnTooLarge):
		return errcode.New(errcode.OutOfRange, "metadata transaction too large: %v", err)
	case errors.Is(err, kv.ErrValueTooLarge), errors.Is(err, kv.ErrKeyTooLarge):
		return errcode.WithErrno(errcode.InvalidArgument, syscall.E2BIG, "%v", err)
	case errors.Is(err, kv.ErrClosed):
		return errcode.New(errcode.Unavailable, "metadata store closed: %v", err)
	}
	return errcode.New(errcode.Internal, "metadata store: %v", err)
}

func asErrcode(err error, e **errcode.Error) bool { return errors.As(err, e) }
