package errcode

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRoundTripThroughGRPC(t *testing.T) {
	for c := range names {
		if c == OK {
			continue
		}
		orig := New(c, "thing %d failed", 7)
		back := FromGRPC(ToGRPC(orig))
		var e *Error
		if !errors.As(back, &e) {
			t.Fatalf("%v: FromGRPC returned %T", c, back)
		}
		if e.Code != c || e.Msg != "thing 7 failed" || e.Errno() != c.Errno() {
			t.Errorf("%v: round trip gave code %v msg %q errno %v", c, e.Code, e.Msg, e.Errno())
		}
	}
}

func TestExplicitErrnoSurvives(t *testing.T) {
	back := FromGRPC(ToGRPC(WithErrno(PermissionDenied, syscall.EPERM, "not the owner")))
	if got := ErrnoOf(back); got != syscall.EPERM {
		t.Fatalf("errno = %v, want EPERM", got)
	}
	if !Is(back, PermissionDenied) {
		t.Fatalf("code lost: %v", back)
	}
}

func TestCodeOf(t *testing.T) {
	cases := []struct {
		err  error
		want Code
	}{
		{nil, OK},
		{fmt.Errorf("wrapped: %w", New(NotFound, "x")), NotFound},
		{context.Canceled, Canceled},
		{fmt.Errorf("op: %w", context.DeadlineExceeded), DeadlineExceeded},
		{status.Error(codes.Unavailable, "down"), Unavailable},
		{errors.New("plain"), Internal},
	}
	for _, c := range cases {
		if got := CodeOf(c.err); got != c.want {
			t.Errorf("CodeOf(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestErrnoMapping(t *testing.T) {
	want := map[Code]syscall.Errno{
		NotFound: syscall.ENOENT, AlreadyExists: syscall.EEXIST, NotDirectory: syscall.ENOTDIR,
		IsDirectory: syscall.EISDIR, NotEmpty: syscall.ENOTEMPTY, NameTooLong: syscall.ENAMETOOLONG,
		PermissionDenied: syscall.EACCES, NoSpace: syscall.ENOSPC, Loop: syscall.ELOOP,
	}
	for c, e := range want {
		if c.Errno() != e {
			t.Errorf("%v.Errno() = %v, want %v", c, c.Errno(), e)
		}
	}
	if ErrnoOf(nil) != 0 {
		t.Error("ErrnoOf(nil) != 0")
	}
}

func TestNonEmberGRPCErrorPassesThrough(t *testing.T) {
	in := status.Error(codes.NotFound, "no such method")
	if out := ToGRPC(in); out != in {
		t.Fatalf("ToGRPC rewrote a plain gRPC status: %v", out)
	}
	if !Is(FromGRPC(in), NotFound) {
		t.Fatal("plain NotFound status did not map to NotFound")
	}
}
