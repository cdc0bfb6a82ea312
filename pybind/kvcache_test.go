package pybind

import (
	"testing"
	"unsafe"

	"github.com/emberfs/emberfs/internal/errcode"
)

func addrOf[T any](s []T) uintptr {
	if len(s) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(&s[0]))
}

// The Python side always packs batches consistently; these are the checks
// that keep a wrong caller (or a future bug there) from reading past the
// caller's memory.
func TestUnpackKeys(t *testing.T) {
	packed := []byte("abcdefghij")
	lens := []int64{3, 0, 7}
	keys, err := unpackKeys(addrOf(packed), len(packed), addrOf(lens), len(lens))
	if err != nil {
		t.Fatal(err)
	}
	if string(keys[0]) != "abc" || len(keys[1]) != 0 || string(keys[2]) != "defghij" {
		t.Fatalf("keys %q", keys)
	}
	// Keys alias the packed buffer, capped so an append cannot overwrite the next key.
	if cap(keys[0]) != 3 {
		t.Fatalf("cap %d, want 3", cap(keys[0]))
	}
	for _, bad := range [][]int64{{3, 0, 8}, {11}, {-1, 11}, {3, 3}} {
		if _, err := unpackKeys(addrOf(packed), len(packed), addrOf(bad), len(bad)); !errcode.Is(err, errcode.InvalidArgument) {
			t.Errorf("lengths %v: err %v, want InvalidArgument", bad, err)
		}
	}
	if _, err := unpackKeys(addrOf(packed), len(packed), addrOf(lens), -1); !errcode.Is(err, errcode.InvalidArgument) {
		t.Errorf("negative count: %v", err)
	}
	if _, err := unpackKeys(0, 5, addrOf(lens), 1); !errcode.Is(err, errcode.InvalidArgument) {
		t.Errorf("null keys: %v", err)
	}
}

func TestBuffers(t *testing.T) {
	a, b := make([]byte, 4), make([]byte, 9)
	addrs := []int64{int64(addrOf(a)), int64(addrOf(b)), 0}
	lens := []int64{4, 9, 0}
	bufs, err := buffers(addrOf(addrs), addrOf(lens), 3)
	if err != nil {
		t.Fatal(err)
	}
	bufs[1][8] = 7
	if len(bufs[0]) != 4 || b[8] != 7 || bufs[2] == nil || len(bufs[2]) != 0 {
		t.Fatalf("bufs %v", bufs)
	}
	addrs[2], lens[2] = 0, 5
	if _, err := buffers(addrOf(addrs), addrOf(lens), 3); !errcode.Is(err, errcode.InvalidArgument) {
		t.Errorf("null buffer with length: %v", err)
	}
	lens[2] = -1
	if _, err := buffers(addrOf(addrs), addrOf(lens), 3); !errcode.Is(err, errcode.InvalidArgument) {
		t.Errorf("negative length: %v", err)
	}
}
