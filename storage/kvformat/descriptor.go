package kvformat

import (
	"encoding/json"
	"fmt"
)

// DescriptorKey is the key of the record in every descriptor slot.
var DescriptorKey = []byte("\x00emberfs-kvcache-namespace")

// Descriptor is a namespace's settings as the storage side needs them. It
// is stored (JSON) as the value of a record in each chain's descriptor
// slot, so a storage target learns its namespaces from its own disk and a
// returning replica gets them with the chain's other chunks on resync.
type Descriptor struct {
	Name string `json:"name"`
	ID   uint32 `json:"id"`
	// Chains is how many chains the namespace spreads over: each chain's
	// share of the capacity is CapacityBytes / Chains.
	Chains        int   `json:"chains"`
	CapacityBytes int64 `json:"capacity_bytes"`
	// MaxValueBytes is the value-size class: the largest value accepted.
	MaxValueBytes int64 `json:"max_value_bytes"`
	TTLNanos      int64 `json:"ttl_ns"` // 0 = values never expire
	// Evict: true evicts least recently used values when the namespace is
	// full; false refuses puts with NoSpace instead.
	Evict bool `json:"evict"`
	// SlotBits narrows key hashes to force slot sharing (tests); 0 = 64.
	SlotBits uint8 `json:"slot_bits,omitempty"`
}

// ChainShare is the capacity each chain holds.
func (d *Descriptor) ChainShare() int64 {
	if d.Chains <= 0 {
		return d.CapacityBytes
	}
	return d.CapacityBytes / int64(d.Chains)
}

// Encode returns the descriptor's record value.
func (d *Descriptor) Encode() []byte {
	b, err := json.Marshal(d)
	if err != nil {
		panic(err) // plain struct: cannot fail
	}
	return b
}

// DecodeDescriptor parses a descriptor record value.
func DecodeDescriptor(b []byte) (Descriptor, error) {
	var d Descriptor
	if err := json.Unmarshal(b, &d); err != nil {
		return Descriptor{}, fmt.Errorf("kv namespace descriptor: %v", err)
	}
	if d.ID == 0 || d.ID > MaxNamespaceID {
		return Descriptor{}, fmt.Errorf("kv namespace descriptor %q: id %d out of range", d.Name, d.ID)
	}
	return d, nil
}
