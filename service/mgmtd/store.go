package mgmtd

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/emberfs/emberfs/service/kv"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
)

// KV layout. Every durable bit of mgmtd state lives under "mgmtd/"; records
// are protobuf messages holding only their durable fields (local states,
// free space and heartbeat times live in the primary's memory, as in 3FS).
const keyPrefix = "mgmtd/"

var (
	keyPrimary   = []byte(keyPrefix + "primary")
	keyVersion   = []byte(keyPrefix + "routing-version")
	keyConfig    = []byte(keyPrefix + "config")
	keyNextNode  = []byte(keyPrefix + "next/node")
	keyNextChain = []byte(keyPrefix + "next/chain")
	keyNextTable = []byte(keyPrefix + "next/table")
	prefixNode   = []byte(keyPrefix + "node/")
	prefixTarget = []byte(keyPrefix + "target/")
	prefixChain  = []byte(keyPrefix + "chain/")
	prefixTable  = []byte(keyPrefix + "table/")
)

func key32(prefix []byte, id uint32) []byte {
	return binary.BigEndian.AppendUint32(append([]byte(nil), prefix...), id)
}

func key64(prefix []byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), prefix...), id)
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func readU64(tx kv.ReadTx, key []byte) (uint64, error) {
	v, ok, err := tx.Get(key)
	if err != nil || !ok {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("mgmtd: corrupt %q: %d bytes", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func setProto(tx kv.Tx, key []byte, m proto.Message) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	return tx.Set(key, b)
}

// leaseRecord is the primary lease key's value.
type leaseRecord struct {
	Holder    string `json:"holder"`
	Address   string `json:"address"`
	Term      uint64 `json:"term"`
	ExpiresMs int64  `json:"expires_unix_ms"`
}

func readLease(tx kv.ReadTx) (leaseRecord, bool, error) {
	var rec leaseRecord
	v, ok, err := tx.Get(keyPrimary)
	if err != nil || !ok {
		return rec, false, err
	}
	if err := json.Unmarshal(v, &rec); err != nil {
		return rec, false, fmt.Errorf("mgmtd: corrupt primary lease: %w", err)
	}
	return rec, true, nil
}

func writeLease(tx kv.Tx, rec leaseRecord) error {
	b, _ := json.Marshal(rec)
	return tx.Set(keyPrimary, b)
}

// durable is everything mgmtd keeps in the KV, as loaded at takeover.
type durable struct {
	version                        uint64
	config                         *mgmtdpb.ClusterConfig
	nodes                          map[uint32]*mgmtdpb.Node
	targets                        map[uint64]*mgmtdpb.Target
	chains                         map[uint32]*mgmtdpb.Chain
	tables                         map[uint32]*mgmtdpb.ChainTable
	nextNode, nextChain, nextTable uint64
}

func scanProtos[T proto.Message](tx kv.ReadTx, prefix []byte, mk func() T, put func(T)) error {
	kvs, err := tx.GetRange(prefix, kv.PrefixEnd(prefix), kv.RangeOptions{})
	if err != nil {
		return err
	}
	for _, e := range kvs {
		m := mk()
		if err := proto.Unmarshal(e.Value, m); err != nil {
			return fmt.Errorf("mgmtd: corrupt record %q: %w", e.Key, err)
		}
		put(m)
	}
	return nil
}

func loadDurable(ctx context.Context, eng kv.Engine) (*durable, error) {
	var d *durable
	err := eng.ReadTransact(ctx, func(tx kv.ReadTx) error {
		d = &durable{
			nodes:   map[uint32]*mgmtdpb.Node{},
			targets: map[uint64]*mgmtdpb.Target{},
			chains:  map[uint32]*mgmtdpb.Chain{},
			tables:  map[uint32]*mgmtdpb.ChainTable{},
		}
		var err error
		if d.version, err = readU64(tx, keyVersion); err != nil {
			return err
		}
		if d.nextNode, err = readU64(tx, keyNextNode); err != nil {
			return err
		}
		if d.nextChain, err = readU64(tx, keyNextChain); err != nil {
			return err
		}
		if d.nextTable, err = readU64(tx, keyNextTable); err != nil {
			return err
		}
		if v, ok, err := tx.Get(keyConfig); err != nil {
			return err
		} else if ok {
			d.config = &mgmtdpb.ClusterConfig{}
			if err := proto.Unmarshal(v, d.config); err != nil {
				return fmt.Errorf("mgmtd: corrupt cluster config: %w", err)
			}
		}
		if err := scanProtos(tx, prefixNode, func() *mgmtdpb.Node { return &mgmtdpb.Node{} },
			func(m *mgmtdpb.Node) { d.nodes[m.NodeId] = m }); err != nil {
			return err
		}
		if err := scanProtos(tx, prefixTarget, func() *mgmtdpb.Target { return &mgmtdpb.Target{} },
			func(m *mgmtdpb.Target) { d.targets[m.TargetId] = m }); err != nil {
			return err
		}
		if err := scanProtos(tx, prefixChain, func() *mgmtdpb.Chain { return &mgmtdpb.Chain{} },
			func(m *mgmtdpb.Chain) { d.chains[m.ChainId] = m }); err != nil {
			return err
		}
		return scanProtos(tx, prefixTable, func() *mgmtdpb.ChainTable { return &mgmtdpb.ChainTable{} },
			func(m *mgmtdpb.ChainTable) { d.tables[m.TableId] = m })
	})
	return d, err
}

// change is one atomic update of durable state: written in a single
// fenced transaction, then applied to the primary's memory.
type change struct {
	nodes       []*mgmtdpb.Node
	targets     []*mgmtdpb.Target
	chains      []*mgmtdpb.Chain
	tables      []*mgmtdpb.ChainTable
	config      *mgmtdpb.ClusterConfig
	nextNode    uint64 // 0: unchanged
	nextChain   uint64
	nextTable   uint64
	bumpRouting bool
}

func (c *change) empty() bool {
	return len(c.nodes) == 0 && len(c.targets) == 0 && len(c.chains) == 0 && len(c.tables) == 0 &&
		c.config == nil && c.nextNode == 0 && c.nextChain == 0 && c.nextTable == 0 && !c.bumpRouting
}

// durableNode strips the fields that are not stored.
func durableNode(n *mgmtdpb.Node) *mgmtdpb.Node {
	c := proto.Clone(n).(*mgmtdpb.Node)
	c.LastHeartbeatUnixMs = 0
	return c
}

func durableTarget(t *mgmtdpb.Target) *mgmtdpb.Target {
	return &mgmtdpb.Target{TargetId: t.TargetId, NodeId: t.NodeId, ChainId: t.ChainId, AdminOffline: t.AdminOffline}
}

func (c *change) write(tx kv.Tx, newVersion uint64) error {
	for _, n := range c.nodes {
		if err := setProto(tx, key32(prefixNode, n.NodeId), durableNode(n)); err != nil {
			return err
		}
	}
	for _, t := range c.targets {
		if err := setProto(tx, key64(prefixTarget, t.TargetId), durableTarget(t)); err != nil {
			return err
		}
	}
	for _, ch := range c.chains {
		if err := setProto(tx, key32(prefixChain, ch.ChainId), ch); err != nil {
			return err
		}
	}
	for _, t := range c.tables {
		if err := setProto(tx, key32(prefixTable, t.TableId), t); err != nil {
			return err
		}
	}
	if c.config != nil {
		if err := setProto(tx, keyConfig, c.config); err != nil {
			return err
		}
	}
	for _, kvp := range []struct {
		key []byte
		v   uint64
	}{{keyNextNode, c.nextNode}, {keyNextChain, c.nextChain}, {keyNextTable, c.nextTable}} {
		if kvp.v != 0 {
			if err := tx.Set(kvp.key, u64(kvp.v)); err != nil {
				return err
			}
		}
	}
	if c.bumpRouting {
		return tx.Set(keyVersion, u64(newVersion))
	}
	return nil
}
