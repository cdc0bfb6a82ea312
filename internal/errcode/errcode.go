// Package errcode gives every EmberFS failure a typed code that survives
// crossing gRPC and the data transport, and maps file errors to POSIX errnos.
// Services return *Error; clients test codes with Is, never by string.
package errcode

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Code is a stable numeric error code; values are part of the wire format.
type Code uint32

const (
	OK Code = iota
	Internal
	InvalidArgument
	NotFound
	AlreadyExists
	PermissionDenied
	Unauthenticated // wrong or missing cluster token
	Unavailable     // service down, lease lost, not serving
	NotPrimary      // mgmtd that is not the primary; message carries the primary address
	StaleVersion    // chain or routing version out of date: refresh routing and retry
	NotCommitted    // CRAQ: replica holds only a pending version of the chunk
	ChecksumMismatch
	NoSpace
	NotDirectory
	IsDirectory
	NotEmpty
	NameTooLong
	CrossDevice
	Loop
	TooManyLinks
	NotSupported
	Busy
	Canceled
	DeadlineExceeded
	OutOfRange
	Conflict // transaction retry bound reached
	ReadOnly
	BadFile // bad file handle / session
	Stale   // ESTALE: inode no longer exists
	FileTooLarge
)

var names = map[Code]string{
	OK: "ok", Internal: "internal", InvalidArgument: "invalid argument", NotFound: "not found",
	AlreadyExists: "already exists", PermissionDenied: "permission denied",
	Unauthenticated: "unauthenticated", Unavailable: "unavailable", NotPrimary: "not primary",
	StaleVersion: "stale version", NotCommitted: "not committed", ChecksumMismatch: "checksum mismatch",
	NoSpace: "no space", NotDirectory: "not a directory", IsDirectory: "is a directory",
	NotEmpty: "directory not empty", NameTooLong: "name too long", CrossDevice: "cross-device",
	Loop: "too many levels of symbolic links", TooManyLinks: "too many links",
	NotSupported: "not supported", Busy: "busy", Canceled: "canceled",
	DeadlineExceeded: "deadline exceeded", OutOfRange: "out of range", Conflict: "conflict",
	ReadOnly: "read-only", BadFile: "bad file handle", Stale: "stale handle", FileTooLarge: "file too large",
}

func (c Code) String() string {
	if n, ok := names[c]; ok {
		return n
	}
	return fmt.Sprintf("code(%d)", uint32(c))
}

var errnos = map[Code]syscall.Errno{
	Internal: syscall.EIO, InvalidArgument: syscall.EINVAL, NotFound: syscall.ENOENT,
	AlreadyExists: syscall.EEXIST, PermissionDenied: syscall.EACCES, Unauthenticated: syscall.EACCES,
	Unavailable: syscall.EAGAIN, NotPrimary: syscall.EAGAIN, StaleVersion: syscall.EAGAIN,
	NotCommitted: syscall.EAGAIN, ChecksumMismatch: syscall.EIO, NoSpace: syscall.ENOSPC,
	NotDirectory: syscall.ENOTDIR, IsDirectory: syscall.EISDIR, NotEmpty: syscall.ENOTEMPTY,
	NameTooLong: syscall.ENAMETOOLONG, CrossDevice: syscall.EXDEV, Loop: syscall.ELOOP,
	TooManyLinks: syscall.EMLINK, NotSupported: syscall.ENOTSUP, Busy: syscall.EBUSY,
	Canceled: syscall.EINTR, DeadlineExceeded: syscall.ETIMEDOUT, OutOfRange: syscall.ERANGE,
	Conflict: syscall.EAGAIN, ReadOnly: syscall.EROFS, BadFile: syscall.EBADF, Stale: syscall.ESTALE,
	FileTooLarge: syscall.EFBIG,
}

// Errno maps a code to the errno a POSIX file system would return.
func (c Code) Errno() syscall.Errno {
	if e, ok := errnos[c]; ok {
		return e
	}
	return syscall.EIO
}

// Error is an EmberFS error: a code plus a message for people. Special
// errnos (EPERM versus EACCES, for example) can be carried explicitly.
type Error struct {
	Code  Code
	Msg   string
	errno syscall.Errno
	// redirect names where to retry (the mgmtd primary, for NotPrimary).
	// It travels as a typed gRPC status detail, so callers never parse it
	// out of the message.
	redirect string
}

func (e *Error) Error() string { return e.Code.String() + ": " + e.Msg }

// Errno is the POSIX errno for e.
func (e *Error) Errno() syscall.Errno {
	if e.errno != 0 {
		return e.errno
	}
	return e.Code.Errno()
}

// Redirect is the address the error tells the caller to retry at ("" for
// none).
func (e *Error) Redirect() string { return e.redirect }

// WithRedirect returns a copy of e that names addr as where to retry.
func (e *Error) WithRedirect(addr string) *Error {
	c := *e
	c.redirect = addr
	return &c
}

// New returns an *Error with a formatted message.
func New(c Code, format string, args ...any) *Error {
	return &Error{Code: c, Msg: fmt.Sprintf(format, args...)}
}

// WithErrno returns an *Error whose errno differs from its code's default
// (EPERM for operations only an owner may do, for instance).
func WithErrno(c Code, errno syscall.Errno, format string, args ...any) *Error {
	return &Error{Code: c, Msg: fmt.Sprintf(format, args...), errno: errno}
}

// CodeOf extracts the code of err: OK for nil, the code of any *Error in the
// chain, a mapped code for context errors and gRPC statuses, else Internal.
func CodeOf(err error) Code {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	switch {
	case errors.Is(err, context.Canceled):
		return Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return DeadlineExceeded
	}
	if st, ok := status.FromError(err); ok {
		return fromGRPCCode(st.Code())
	}
	return Internal
}

// Is reports whether err carries code c.
func Is(err error, c Code) bool { return CodeOf(err) == c }

// ErrnoOf is the POSIX errno for any error (0 for nil).
func ErrnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Errno()
	}
	return CodeOf(err).Errno()
}

// ToGRPC converts err to a gRPC status error that carries the EmberFS code
// and errno as details, so FromGRPC restores it exactly on the other side.
func ToGRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		var e *Error
		if !errors.As(err, &e) {
			return err // already a gRPC status from lower layers
		}
	}
	code := CodeOf(err)
	st := status.New(grpcCode(code), err.Error())
	details := []protoadapt.MessageV1{wrapperspb.UInt32(uint32(code)), wrapperspb.UInt32(uint32(ErrnoOf(err)))}
	var e *Error
	if errors.As(err, &e) && e.redirect != "" {
		details = append(details, wrapperspb.String(e.redirect))
	}
	st2, derr := st.WithDetails(details...)
	if derr != nil {
		return st.Err()
	}
	return st2.Err()
}

// FromGRPC turns a gRPC error back into an *Error (nil stays nil).
func FromGRPC(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	details := st.Details()
	msg := st.Message()
	if len(details) >= 2 {
		c, ok1 := details[0].(*wrapperspb.UInt32Value)
		n, ok2 := details[1].(*wrapperspb.UInt32Value)
		if ok1 && ok2 {
			code := Code(c.GetValue())
			prefix := code.String() + ": "
			if len(msg) >= len(prefix) && msg[:len(prefix)] == prefix {
				msg = msg[len(prefix):]
			}
			e := &Error{Code: code, Msg: msg, errno: syscall.Errno(n.GetValue())}
			if len(details) >= 3 {
				if r, ok := details[2].(*wrapperspb.StringValue); ok {
					e.redirect = r.GetValue()
				}
			}
			return e
		}
	}
	return &Error{Code: fromGRPCCode(st.Code()), Msg: msg}
}

func grpcCode(c Code) codes.Code {
	switch c {
	case OK:
		return codes.OK
	case InvalidArgument, NameTooLong:
		return codes.InvalidArgument
	case NotFound:
		return codes.NotFound
	case AlreadyExists:
		return codes.AlreadyExists
	case PermissionDenied:
		return codes.PermissionDenied
	case Unauthenticated:
		return codes.Unauthenticated
	case Unavailable, NotPrimary:
		return codes.Unavailable
	case Canceled:
		return codes.Canceled
	case DeadlineExceeded:
		return codes.DeadlineExceeded
	case OutOfRange:
		return codes.OutOfRange
	case NoSpace:
		return codes.ResourceExhausted
	case NotSupported:
		return codes.Unimplemented
	case Conflict, StaleVersion, NotCommitted:
		return codes.Aborted
	case Internal, ChecksumMismatch:
		return codes.Internal
	default:
		return codes.FailedPrecondition
	}
}

func fromGRPCCode(c codes.Code) Code {
	switch c {
	case codes.OK:
		return OK
	case codes.InvalidArgument:
		return InvalidArgument
	case codes.NotFound:
		return NotFound
	case codes.AlreadyExists:
		return AlreadyExists
	case codes.PermissionDenied:
		return PermissionDenied
	case codes.Unauthenticated:
		return Unauthenticated
	case codes.Unavailable:
		return Unavailable
	case codes.Canceled:
		return Canceled
	case codes.DeadlineExceeded:
		return DeadlineExceeded
	case codes.OutOfRange:
		return OutOfRange
	case codes.ResourceExhausted:
		return NoSpace
	case codes.Unimplemented:
		return NotSupported
	case codes.Aborted:
		return Conflict
	default:
		return Internal
	}
}
