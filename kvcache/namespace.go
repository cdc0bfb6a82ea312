package kvcache

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/storage/kvformat"
	"github.com/emberfs/emberfs/storage/storageclient"
)

// Where namespaces live in the file system. Names never start with a dot,
// so the dot directories beside them cannot collide with a namespace.
const (
	RegistryDir = "/.emberfs/kvcache"
	// idsDir holds one empty file per namespace id in use: an exclusive
	// create there is what makes an id unique across concurrent creators.
	idsDir = RegistryDir + "/.ids"
	// tmpDir holds registry files being written; a rename with
	// RenameNoReplace publishes one, so readers never see half a file and
	// two creators of one name cannot both win.
	tmpDir = RegistryDir + "/.tmp"
)

// MaxNameLen bounds namespace names.
const MaxNameLen = 128

// Settings configure a new namespace. DefaultSettings gives the usual
// values; a zero field means what its comment says.
type Settings struct {
	// MaxValueBytes is the value-size class: the largest value accepted
	// (0 = DefaultMaxValueBytes; at most kvformat.MaxValueLen).
	MaxValueBytes int64
	// TTL is how long a value lives after its put (0 = forever).
	TTL time.Duration
	// CapacityBytes is the namespace's capacity over all its chains
	// (required).
	CapacityBytes int64
	// Replicas picks the chain table by replication factor when ChainTable
	// is 0 (0 = the table with the most replicas).
	Replicas int
	// Evict evicts least recently used values when the namespace is full;
	// false refuses puts with NoSpace instead. DefaultSettings sets it.
	Evict bool
	// ChainTable is the chain table whose chains hold the values (0 = pick
	// by Replicas).
	ChainTable uint32
	// SlotBits narrows key hashes so that distinct keys share slots on
	// purpose (tests; 0 = 64 bits).
	SlotBits uint8
}

// DefaultMaxValueBytes is the value-size class when none is given.
const DefaultMaxValueBytes = 4 << 20

// DefaultSettings returns settings with eviction on, 3 replicas, 4 MiB
// values, no TTL, and the given capacity.
func DefaultSettings(capacityBytes int64) Settings {
	return Settings{CapacityBytes: capacityBytes, MaxValueBytes: DefaultMaxValueBytes, Replicas: 3, Evict: true}
}

// Namespace is a namespace's registry record: the descriptor each of its
// chains holds, plus where those chains are.
type Namespace struct {
	kvformat.Descriptor
	ChainTable uint32    `json:"chain_table"`
	ChainIDs   []uint32  `json:"chain_ids"`
	Replicas   int       `json:"replicas"`
	CreatedAt  time.Time `json:"created_at"`
}

// TTL is the namespace's value lifetime (0 = forever).
func (n *Namespace) TTL() time.Duration { return time.Duration(n.TTLNanos) }

// ValidateName checks a namespace name: 1..128 characters of
// [A-Za-z0-9._-], not starting with a dot.
func ValidateName(name string) error {
	if name == "" {
		return errcode.New(errcode.InvalidArgument, "kvcache namespace name is empty")
	}
	if len(name) > MaxNameLen {
		return errcode.New(errcode.NameTooLong, "kvcache namespace name %.20q... is %d characters, the limit is %d", name, len(name), MaxNameLen)
	}
	if name[0] == '.' {
		return errcode.New(errcode.InvalidArgument, "kvcache namespace name %q starts with a dot (reserved)", name)
	}
	for i := 0; i < len(name); i++ {
		b := name[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '.' || b == '_' || b == '-') {
			return errcode.New(errcode.InvalidArgument, "kvcache namespace name %q: character %q at %d is not one of A-Z a-z 0-9 . _ -", name, rune(b), i)
		}
	}
	return nil
}

func registryPath(name string) string { return path.Join(RegistryDir, name) }

func (s *Settings) check() error {
	if s.MaxValueBytes == 0 {
		s.MaxValueBytes = DefaultMaxValueBytes
	}
	if s.MaxValueBytes < 0 || s.MaxValueBytes > kvformat.MaxValueLen {
		return errcode.New(errcode.InvalidArgument, "kvcache max value size %d is outside 1..%d", s.MaxValueBytes, kvformat.MaxValueLen)
	}
	if s.CapacityBytes <= 0 {
		return errcode.New(errcode.InvalidArgument, "kvcache capacity %d: a namespace needs a positive capacity in bytes", s.CapacityBytes)
	}
	if s.CapacityBytes < s.MaxValueBytes {
		return errcode.New(errcode.InvalidArgument, "kvcache capacity %d bytes is smaller than one value of the max value size %d", s.CapacityBytes, s.MaxValueBytes)
	}
	if s.TTL < 0 {
		return errcode.New(errcode.InvalidArgument, "kvcache TTL %v is negative", s.TTL)
	}
	if s.Replicas < 0 {
		return errcode.New(errcode.InvalidArgument, "kvcache replicas %d is negative", s.Replicas)
	}
	if s.SlotBits > 64 {
		return errcode.New(errcode.InvalidArgument, "kvcache slot bits %d is over 64", s.SlotBits)
	}
	return nil
}

// pickTable finds the chain table for s in the client's routing.
func pickTable(ctx context.Context, c *client.Client, s Settings) (table uint32, chains []uint32, replicas int, err error) {
	cache := c.Routing()
	if err := cache.Refresh(ctx); err != nil && cache.Current() == nil {
		return 0, nil, 0, errcode.New(errcode.Unavailable, "kvcache: no routing info from mgmtd: %v", err)
	}
	r := cache.Current()
	type cand struct {
		id       uint32
		replicas int
		chains   []uint32
	}
	var all []cand
	for _, t := range r.Info.GetTables() {
		all = append(all, cand{t.TableId, int(t.ReplicationFactor), t.ChainIds})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].id < all[j].id })
	describe := func() string {
		if len(all) == 0 {
			return "the cluster has no chain tables (create one with `emberfs admin create-chain-table`)"
		}
		var parts []string
		for _, t := range all {
			parts = append(parts, fmt.Sprintf("table %d: %d chains of %d replicas", t.id, len(t.chains), t.replicas))
		}
		return "the cluster has " + strings.Join(parts, "; ")
	}
	var pick *cand
	for i := range all {
		t := &all[i]
		switch {
		case s.ChainTable != 0:
			if t.id == s.ChainTable {
				pick = t
			}
		case s.Replicas != 0:
			if t.replicas == s.Replicas && pick == nil {
				pick = t
			}
		default:
			if pick == nil || t.replicas > pick.replicas {
				pick = t
			}
		}
	}
	switch {
	case pick == nil && s.ChainTable != 0:
		return 0, nil, 0, errcode.New(errcode.NotFound, "kvcache: chain table %d does not exist; %s", s.ChainTable, describe())
	case pick == nil && s.Replicas != 0:
		return 0, nil, 0, errcode.New(errcode.NotFound, "kvcache: no chain table has %d replicas; %s", s.Replicas, describe())
	case pick == nil:
		return 0, nil, 0, errcode.New(errcode.NotFound, "kvcache: %s", describe())
	case s.ChainTable != 0 && s.Replicas != 0 && pick.replicas != s.Replicas:
		return 0, nil, 0, errcode.New(errcode.InvalidArgument, "kvcache: chain table %d has %d replicas, not the %d asked for", pick.id, pick.replicas, s.Replicas)
	case len(pick.chains) == 0:
		return 0, nil, 0, errcode.New(errcode.Unavailable, "kvcache: chain table %d has no chains", pick.id)
	}
	return pick.id, slices.Clone(pick.chains), pick.replicas, nil
}

// descriptorRecord encodes the record every chain's descriptor slot holds.
func descriptorRecord(d *kvformat.Descriptor) (header, value []byte) {
	value = d.Encode()
	h := kvformat.NewHeader(kvformat.DescriptorKey, value, time.Now().UnixNano(), 0)
	return h.Encode(nil), value
}

// Create makes namespace name: it reserves an unused random id, writes the
// descriptor record into every chain's descriptor slot (so the storage
// side knows the settings before any value arrives), then publishes the
// registry file. A name that exists fails with AlreadyExists.
func Create(ctx context.Context, c *client.Client, name string, s Settings) (Namespace, error) {
	if err := ValidateName(name); err != nil {
		return Namespace{}, err
	}
	if err := s.check(); err != nil {
		return Namespace{}, err
	}
	if _, err := c.Stat(ctx, meta.Root, meta.P(registryPath(name))); err == nil {
		return Namespace{}, errcode.New(errcode.AlreadyExists, "kvcache namespace %q already exists", name)
	} else if !errcode.Is(err, errcode.NotFound) {
		return Namespace{}, err
	}
	table, chains, replicas, err := pickTable(ctx, c, s)
	if err != nil {
		return Namespace{}, err
	}
	for _, dir := range []string{idsDir, tmpDir} {
		if _, err := c.Mkdir(ctx, meta.Root, meta.P(dir), 0o755, true); err != nil {
			return Namespace{}, fmt.Errorf("kvcache: making %s: %w", dir, err)
		}
	}
	id, err := reserveID(ctx, c)
	if err != nil {
		return Namespace{}, err
	}
	ns := Namespace{
		Descriptor: kvformat.Descriptor{Name: name, ID: id, Chains: len(chains), CapacityBytes: s.CapacityBytes,
			MaxValueBytes: s.MaxValueBytes, TTLNanos: int64(s.TTL), Evict: s.Evict, SlotBits: s.SlotBits},
		ChainTable: table, ChainIDs: chains, Replicas: replicas, CreatedAt: time.Now().UTC().Truncate(time.Second),
	}
	// On any failure below, take back what was written so the id can be
	// reused and no storage target keeps a descriptor nobody names.
	undo := func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if c.Storage().KVDrop(cctx, id, chains) == nil {
			_ = c.Remove(cctx, meta.Root, meta.P(idPath(id)))
		}
	}
	hdr, val := descriptorRecord(&ns.Descriptor)
	for i, chain := range chains {
		ref := storageclient.KVRef{Chain: chain, Chunk: kvformat.DescriptorChunk(id, i), Key: kvformat.DescriptorKey}
		if err := c.Storage().KVPut(ctx, ref, hdr, val); err != nil {
			undo()
			return Namespace{}, fmt.Errorf("kvcache: writing namespace %q's descriptor to chain %d: %w", name, chain, err)
		}
	}
	body, _ := json.MarshalIndent(&ns, "", "  ")
	tmp := path.Join(tmpDir, fmt.Sprintf("%s.%d", name, id))
	if err := c.WriteFile(ctx, meta.Root, meta.P(tmp), append(body, '\n'), 0o644); err != nil {
		undo()
		return Namespace{}, fmt.Errorf("kvcache: writing namespace %q's registry file: %w", name, err)
	}
	if err := c.Rename(ctx, meta.Root, meta.P(tmp), meta.P(registryPath(name)), meta.RenameNoReplace); err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		_ = c.Remove(cctx, meta.Root, meta.P(tmp))
		cancel()
		undo()
		if errcode.Is(err, errcode.AlreadyExists) {
			return Namespace{}, errcode.New(errcode.AlreadyExists, "kvcache namespace %q already exists", name)
		}
		return Namespace{}, fmt.Errorf("kvcache: publishing namespace %q: %w", name, err)
	}
	return ns, nil
}

func idPath(id uint32) string { return path.Join(idsDir, strconv.FormatUint(uint64(id), 10)) }

// reserveID claims a random unused namespace id by creating its file in
// idsDir exclusively. Random ids (not a counter) keep a dropped
// namespace's id from being handed straight to the next one.
func reserveID(ctx context.Context, c *client.Client) (uint32, error) {
	for range 64 {
		var b [4]byte
		_, _ = rand.Read(b[:])
		id := binary.LittleEndian.Uint32(b[:]) & kvformat.MaxNamespaceID
		if id == 0 {
			continue
		}
		f, err := c.Open(ctx, meta.Root, meta.P(idPath(id)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errcode.Is(err, errcode.AlreadyExists) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("kvcache: reserving namespace id %d: %w", id, err)
		}
		if err := f.Close(); err != nil {
			return 0, fmt.Errorf("kvcache: reserving namespace id %d: %w", id, err)
		}
		return id, nil
	}
	return 0, errcode.New(errcode.NoSpace, "kvcache: no free namespace id found in 64 tries")
}

// Info reads namespace name's registry record. An unknown name fails with
// NotFound naming it.
func Info(ctx context.Context, c *client.Client, name string) (Namespace, error) {
	if err := ValidateName(name); err != nil {
		return Namespace{}, err
	}
	b, err := c.ReadFile(ctx, meta.Root, meta.P(registryPath(name)))
	if errcode.Is(err, errcode.NotFound) {
		return Namespace{}, errcode.New(errcode.NotFound, "kvcache namespace %q does not exist", name)
	}
	if err != nil {
		return Namespace{}, fmt.Errorf("kvcache: reading namespace %q: %w", name, err)
	}
	return decodeNamespace(name, b)
}

func decodeNamespace(name string, b []byte) (Namespace, error) {
	var ns Namespace
	if err := json.Unmarshal(b, &ns); err != nil {
		return Namespace{}, errcode.New(errcode.Internal, "kvcache namespace %q: registry file %s is not valid JSON: %v", name, registryPath(name), err)
	}
	if ns.Name != name || ns.ID == 0 || ns.ID > kvformat.MaxNamespaceID || len(ns.ChainIDs) == 0 || ns.Chains != len(ns.ChainIDs) {
		return Namespace{}, errcode.New(errcode.Internal, "kvcache namespace %q: registry file %s is inconsistent (name %q, id %d, %d chains listed, %d counted)",
			name, registryPath(name), ns.Name, ns.ID, len(ns.ChainIDs), ns.Chains)
	}
	return ns, nil
}

// List returns every namespace, sorted by name.
func List(ctx context.Context, c *client.Client) ([]Namespace, error) {
	ents, err := c.ReadDir(ctx, meta.Root, meta.P(RegistryDir), false)
	if errcode.Is(err, errcode.NotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kvcache: listing %s: %w", RegistryDir, err)
	}
	var out []Namespace
	for _, e := range ents {
		if strings.HasPrefix(e.Name, ".") {
			continue
		}
		ns, err := Info(ctx, c, e.Name)
		if errcode.Is(err, errcode.NotFound) {
			continue // dropped since the listing
		}
		if err != nil {
			return nil, err
		}
		out = append(out, ns)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Drop removes namespace name: the registry file first (so no new client
// opens it), then every value and descriptor on every target of its
// chains, then its id reservation (kept if the storage drop failed, so the
// id is not reused while old values may remain).
func Drop(ctx context.Context, c *client.Client, name string) error {
	ns, err := Info(ctx, c, name)
	if err != nil {
		return err
	}
	if err := c.Remove(ctx, meta.Root, meta.P(registryPath(name))); err != nil {
		if errcode.Is(err, errcode.NotFound) {
			return errcode.New(errcode.NotFound, "kvcache namespace %q does not exist", name)
		}
		return fmt.Errorf("kvcache: removing namespace %q's registry file: %w", name, err)
	}
	if err := c.Storage().KVDrop(ctx, ns.ID, ns.ChainIDs); err != nil {
		return fmt.Errorf("kvcache: namespace %q is unregistered but removing its values (id %d) failed: %w", name, ns.ID, err)
	}
	if err := c.Remove(ctx, meta.Root, meta.P(idPath(ns.ID))); err != nil && !errcode.Is(err, errcode.NotFound) {
		return fmt.Errorf("kvcache: releasing namespace id %d: %w", ns.ID, err)
	}
	return nil
}
