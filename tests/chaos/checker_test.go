package chaos

import (
	"strings"
	"testing"
)

// The checker must be able to fail: these feed it histories and blocks a
// broken cluster would produce.

func TestCheckerRejectsStaleRead(t *testing.T) {
	h := newHistory()
	k := regKey{fid: 7, block: 3}
	h.add(0, regOp{key: k, write: true, value: 1}, 0, 0, 10)
	h.add(0, regOp{key: k, write: true, value: 2}, 0, 20, 30)
	h.add(1, regOp{key: k}, 1, 40, 50) // reads the overwritten value after the overwrite
	if v, _, _ := h.check(0); count(v, "not linearizable") != 1 || count(v, "every change") != 1 {
		t.Fatalf("stale read: violations %q", v)
	}
}

func TestCheckerRejectsLostAcknowledgedWrite(t *testing.T) {
	h := newHistory()
	k := regKey{fid: 7, block: 0}
	h.add(0, regOp{key: k, write: true, value: 5}, 0, 0, 10)
	h.add(1, regOp{key: k}, 0, 20, 30) // the final read finds zeros
	if v, _, _ := h.check(0); count(v, "not linearizable") != 1 {
		t.Fatalf("lost write: violations %q", v)
	}
}

func TestCheckerAcceptsUnknownOutcomes(t *testing.T) {
	h := newHistory()
	k := regKey{fid: 7, block: 0}
	h.add(0, regOp{key: k, write: true, value: 5}, 0, 0, 10)
	h.add(0, regOp{key: k, write: true, value: 6}, 0, 20, unknown) // failed: may land any time
	h.add(1, regOp{key: k}, 5, 40, 50)
	h.add(1, regOp{key: k}, 6, 60, 70)
	if v, _, _ := h.check(0); len(v) != 0 {
		t.Fatalf("legal history rejected: %q", v)
	}
	h.add(1, regOp{key: k}, 5, 80, 90) // back to 5 after 6 was seen
	if v, _, _ := h.check(0); count(v, "not linearizable") != 1 {
		t.Fatalf("read going back in time: violations %q", v)
	}
}

func TestCheckerRejectsValueNeverWritten(t *testing.T) {
	h := newHistory()
	k := regKey{fid: 7, block: 0}
	h.add(0, regOp{key: k, write: true, value: 5}, 0, 0, 10)
	h.add(1, regOp{key: k}, 9, 20, 30)
	v, _, _ := h.check(0)
	if count(v, "no write of that block carried") != 1 || count(v, "not linearizable") != 1 {
		t.Fatalf("value never written: violations %q", v)
	}
}

func TestDecodeBlockRejectsForeignBytes(t *testing.T) {
	b := make([]byte, blockSize)
	fillBlock(b, 42, 3, 99)
	if seq, err := decodeBlock(b, 42, 3); err != nil || seq != 99 {
		t.Fatalf("good block: %d, %v", seq, err)
	}
	if seq, err := decodeBlock(make([]byte, blockSize), 42, 3); err != nil || seq != 0 {
		t.Fatalf("zero block: %d, %v", seq, err)
	}
	if _, err := decodeBlock(b, 42, 4); err == nil {
		t.Fatal("block found at the wrong index accepted")
	}
	if _, err := decodeBlock(b, 43, 3); err == nil {
		t.Fatal("block of another file accepted")
	}
	b[blockSize/2] ^= 1
	if _, err := decodeBlock(b, 42, 3); err == nil || !strings.Contains(err.Error(), "CRC") {
		t.Fatalf("flipped bit: %v", err)
	}
	garbage := make([]byte, blockSize)
	garbage[100] = 1
	if _, err := decodeBlock(garbage, 42, 3); err == nil {
		t.Fatal("garbage accepted")
	}
}

func count(vs []string, sub string) int {
	n := 0
	for _, v := range vs {
		if strings.Contains(v, sub) {
			n++
		}
	}
	return n
}
