package service

import (
	"fmt"
	"time"

	"github.com/emberfs/emberfs/internal/tomlconfig"
	"github.com/emberfs/emberfs/transport"
)

// Duration is a time.Duration written in TOML as a string ("500ms", "2s").
type Duration = tomlconfig.Duration

// Config is the storage service configuration (`emberfs storage --config`).
type Config struct {
	// NodeID identifies this service in the cluster (required, > 0). Target
	// ids are NodeID*100 + index of the target directory, fixed at the
	// first start (each directory remembers its id in a "target-id" file).
	NodeID uint32 `toml:"node_id"`
	// Targets are the target directories, one chunk engine each.
	Targets []string `toml:"targets"`
	// Mgmtd lists the mgmtd addresses (any instance; redirects are followed).
	Mgmtd []string `toml:"mgmtd"`
	// Token is the cluster token (gRPC and data port).
	Token string `toml:"token"`
	// PeerToken is the secret storage services prove the storage role
	// with on each other's data ports (transport.PeerCredential: an
	// HMAC of this node's id under it). It must be the same on every
	// storage service of the cluster and known to nothing else: clients
	// hold the cluster token, so it cannot vouch for the role that chain
	// traffic (forwards, syncs) is taken from. Required; also read from
	// EMBERFS_PEER_TOKEN.
	PeerToken string `toml:"peer_token"`
	// Listen is the gRPC control address; DataListen the data transport's.
	Listen     string `toml:"listen"`
	DataListen string `toml:"data_listen"`
	// AdvertiseAddress / DataAdvertiseAddress are what other nodes dial
	// (default: the bound listen addresses).
	AdvertiseAddress     string `toml:"advertise_address"`
	DataAdvertiseAddress string `toml:"data_advertise_address"`
	// MetricsListen serves Prometheus /metrics over HTTP ("" disables).
	MetricsListen string `toml:"metrics_listen"`
	// ForwardTimeout bounds one forward attempt to a successor; a failed
	// attempt is retried (along the current routing) until it succeeds or
	// this target leaves the write path.
	ForwardTimeout Duration `toml:"forward_timeout"`
	// RepairInterval is how often corrupt chunks are looked for and
	// repaired from another replica (detections also trigger a pass).
	RepairInterval Duration `toml:"repair_interval"`
	// VerifyInterval: see chunkengine.Options.VerifyInterval.
	VerifyInterval Duration `toml:"verify_interval"`
	// KVReclaimInterval is how often a chain head's KVCache reclaimer
	// removes expired values and evicts least recently read ones from
	// namespaces over their share (default 1 s).
	KVReclaimInterval Duration `toml:"kv_reclaim_interval"`
	// KVNow is the clock that decides KV expiry and access times (tests
	// inject one); default time.Now.
	KVNow func() time.Time `toml:"-"`
	// KVInlineMax is kvstore.Options.InlineMax: the largest KV record a
	// get reads into memory rather than sending from its file (0: the
	// default; negative: always from the file).
	KVInlineMax int `toml:"kv_inline_max"`
	// Transport makes the data-path ends (the server clients and chain
	// predecessors call, the caller forwards and syncs go through);
	// nil means TCP (transport.TCP).
	Transport transport.Factory `toml:"-"`
	// DedupeMaxEntries bounds the write dedupe table (one entry per client
	// channel; the oldest finished outcomes are dropped first). Default
	// 262144.
	DedupeMaxEntries int `toml:"dedupe_max_entries"`
	// NoSync skips fsync in the chunk engines (tests and benchmarks only).
	NoSync bool `toml:"no_sync"`
	// BufferedIO writes chunk data through the page cache only, instead of
	// O_DIRECT for its aligned part (docs/chunk-engine.md, "Direct I/O").
	BufferedIO bool `toml:"buffered_io"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`
}

// DefaultConfig returns the defaults `emberfs storage --print-config` prints.
func DefaultConfig() Config {
	return Config{
		Targets:           []string{"/var/lib/emberfs/storage/target0"},
		Mgmtd:             []string{"127.0.0.1:7100"},
		Listen:            "127.0.0.1:7300",
		DataListen:        "127.0.0.1:7310",
		MetricsListen:     "127.0.0.1:7390",
		ForwardTimeout:    Duration{Duration: 30 * time.Second},
		RepairInterval:    Duration{Duration: time.Second},
		VerifyInterval:    Duration{Duration: time.Minute},
		KVReclaimInterval: Duration{Duration: time.Second},
		LogLevel:          "info",
	}
}

// LoadConfig reads a TOML file over the defaults and rejects unknown keys.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	if err := tomlconfig.Load(path, "storage", &cfg); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// Validate checks settings the service cannot run without.
func (c *Config) Validate() error {
	switch {
	case c.NodeID == 0:
		return fmt.Errorf("storage config: node_id must be set (> 0)")
	case uint64(c.NodeID)*100+99 < uint64(c.NodeID):
		return fmt.Errorf("storage config: node_id %d too large", c.NodeID)
	case len(c.Targets) == 0:
		return fmt.Errorf("storage config: no target directories")
	case len(c.Targets) > 100:
		return fmt.Errorf("storage config: %d targets; at most 100 per node", len(c.Targets))
	case len(c.Mgmtd) == 0:
		return fmt.Errorf("storage config: no mgmtd address")
	case c.Token == "":
		return fmt.Errorf("storage config: no cluster token")
	case c.PeerToken == "":
		return fmt.Errorf("storage config: no peer_token (the secret storage services prove the storage role to each other with; the same on every storage node, unknown to clients; see docs/deploy.md)")
	case c.PeerToken == c.Token:
		return fmt.Errorf("storage config: peer_token equals the cluster token, which every client holds; it must be a separate secret")
	case c.Listen == "" || c.DataListen == "":
		return fmt.Errorf("storage config: listen and data_listen must be set")
	}
	seen := map[string]bool{}
	for _, t := range c.Targets {
		if t == "" || seen[t] {
			return fmt.Errorf("storage config: target directory %q empty or listed twice", t)
		}
		seen[t] = true
	}
	if c.ForwardTimeout.Duration <= 0 {
		c.ForwardTimeout.Duration = 30 * time.Second
	}
	if c.KVReclaimInterval.Duration <= 0 {
		c.KVReclaimInterval.Duration = time.Second
	}
	if c.RepairInterval.Duration <= 0 {
		c.RepairInterval.Duration = time.Second
	}
	return nil
}

// TOML renders the config as a TOML document.
func (c Config) TOML() string {
	return tomlconfig.Encode(c)
}
