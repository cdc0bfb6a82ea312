package primaryhint

import (
	"errors"
	"testing"

	"github.com/emberfs/emberfs/internal/errcode"
)

func TestRoundTripThroughGRPC(t *testing.T) {
	err := errcode.FromGRPC(errcode.ToGRPC(Error("10.0.0.2:7100", "10.0.0.1:7100")))
	if !errcode.Is(err, errcode.NotPrimary) {
		t.Fatalf("code %v, want NotPrimary", errcode.CodeOf(err))
	}
	if got := Addr(err); got != "10.0.0.1:7100" {
		t.Fatalf("Addr = %q", got)
	}
	if got := Addr(Error("a", "")); got != "" {
		t.Fatalf("unknown primary gave %q", got)
	}
	if got := Addr(errors.New("primary=x")); got != "" {
		t.Fatalf("non-NotPrimary error gave %q", got)
	}
	// The address is data, not text: a message that merely mentions an
	// address redirects nowhere.
	if got := Addr(errcode.FromGRPC(errcode.ToGRPC(errcode.New(errcode.NotPrimary, "not the primary; primary=10.9.9.9:1")))); got != "" {
		t.Fatalf("address parsed out of message text: %q", got)
	}
}
