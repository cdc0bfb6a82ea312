package kvformat

import (
	"bytes"
	"fmt"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	value := bytes.Repeat([]byte("kv"), 1000)
	h := NewHeader([]byte("block-17"), value, 100, 200)
	b := h.Encode(nil)
	if len(b) != h.Len() {
		t.Fatalf("encoded %d bytes, Len says %d", len(b), h.Len())
	}
	got, err := DecodeHeader(append(b, value...))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Key, h.Key) || got.ValueLen != h.ValueLen || got.ValueCRC != h.ValueCRC || got.Created != 100 || got.Expires != 200 {
		t.Fatalf("decoded %+v, want %+v", got, h)
	}
	if err := got.VerifyValue(value); err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), value...)
	bad[500] ^= 1
	if err := got.VerifyValue(bad); err == nil {
		t.Fatal("a flipped value bit passed verification")
	}
	if err := got.VerifyValue(value[:10]); err == nil {
		t.Fatal("a short value passed verification")
	}
	if !got.Expired(200) || got.Expired(199) {
		t.Fatal("expiry boundary wrong")
	}
}

// Every single-bit flip of an encoded header, and every truncation, must
// fail to decode: a torn or corrupt header reads as absent, never as
// another key.
func TestHeaderCorruptionDetected(t *testing.T) {
	h := NewHeader([]byte("prefix-hash-0123456789"), []byte("v"), 1, 0)
	b := h.Encode(nil)
	for i := range b {
		for bit := 0; bit < 8; bit++ {
			c := append([]byte(nil), b...)
			c[i] ^= 1 << bit
			if _, err := DecodeHeader(c); err == nil {
				t.Fatalf("flip of byte %d bit %d decoded", i, bit)
			}
		}
	}
	for n := 0; n < len(b); n++ {
		if _, err := DecodeHeader(b[:n]); err == nil {
			t.Fatalf("truncation to %d bytes decoded", n)
		}
	}
}

func TestSlots(t *testing.T) {
	seen := map[Slot]string{}
	for i := 0; i < 10000; i++ {
		k := fmt.Sprintf("key-%d", i)
		s := SlotOf(7, []byte(k), 5, 0)
		if s.ChainIndex < 0 || s.ChainIndex >= 5 {
			t.Fatalf("chain index %d", s.ChainIndex)
		}
		if !IsKVChunk(s.Chunk) || NamespaceOf(s.Chunk) != 7 || IsDescriptor(s.Chunk) {
			t.Fatalf("slot %+v not a plain KV chunk of namespace 7", s)
		}
		if o, dup := seen[s]; dup {
			t.Fatalf("%s and %s share a slot at 64 bits", k, o)
		}
		seen[s] = k
		if SlotOf(7, []byte(k), 5, 0) != s {
			t.Fatal("slot not stable")
		}
	}
	// Narrow slots make keys share on purpose.
	narrow := map[Slot]bool{}
	for i := 0; i < 100; i++ {
		narrow[SlotOf(7, []byte(fmt.Sprint(i)), 1, 3)] = true
	}
	if len(narrow) > 8 {
		t.Fatalf("3 slot bits gave %d slots", len(narrow))
	}
	d := DescriptorChunk(7, 3)
	if !IsDescriptor(d) || NamespaceOf(d) != 7 || d.Index != 3 {
		t.Fatalf("descriptor chunk %+v", d)
	}
	if SlotOf(8, []byte("key-1"), 5, 0).Chunk == SlotOf(7, []byte("key-1"), 5, 0).Chunk {
		t.Fatal("namespaces share a chunk")
	}
}

func TestCheckKey(t *testing.T) {
	if CheckKey(nil) == nil || CheckKey(make([]byte, MaxKeyLen+1)) == nil {
		t.Fatal("bad keys accepted")
	}
	if err := CheckKey(make([]byte, MaxKeyLen)); err != nil {
		t.Fatal(err)
	}
}

func TestDescriptor(t *testing.T) {
	d := Descriptor{Name: "llama", ID: 42, Chains: 4, CapacityBytes: 4 << 30, MaxValueBytes: 1 << 20, TTLNanos: 5e9, Evict: true}
	got, err := DecodeDescriptor(d.Encode())
	if err != nil || got != d {
		t.Fatalf("got %+v, %v", got, err)
	}
	if d.ChainShare() != 1<<30 {
		t.Fatal("chain share")
	}
	if _, err := DecodeDescriptor([]byte(`{"id":0}`)); err == nil {
		t.Fatal("id 0 accepted")
	}
}

func TestStatsAdd(t *testing.T) {
	a := Stats{Hits: 1, Misses: 2, BytesRead: 3, BytesStored: 4, Values: 5, Evictions: 6, Expirations: 7, CorruptMisses: 8}
	b := a
	b.Add(a)
	if b != (Stats{2, 4, 6, 8, 10, 12, 14, 16}) {
		t.Fatalf("sum %+v", b)
	}
}
