// Package metad runs a metadata server as a process does (`emberfs meta`):
// it opens the KV, follows mgmtd's routing (chain tables for new files),
// registers as a meta node and heartbeats, serves the Meta gRPC API and
// Prometheus /metrics, and runs the collector and session pruner.
package metad

import (
	"fmt"
	"time"

	"github.com/emberfs/emberfs/internal/tomlconfig"
)

// Duration is a time.Duration written in TOML as a string ("500ms", "2s").
type Duration = tomlconfig.Duration

// Config is the meta process configuration (TOML).
type Config struct {
	// Listen is the gRPC address ("host:port"; port 0 picks one).
	Listen string `toml:"listen"`
	// AdvertiseAddress is what the node registers in mgmtd, the address
	// clients dial (default: the address actually listened on).
	AdvertiseAddress string `toml:"advertise_address"`
	// MetricsListen serves Prometheus /metrics over HTTP ("" disables).
	MetricsListen string `toml:"metrics_listen"`
	// KV is the shared namespace store: "memory", "badger:/dir" or
	// "fdb:/cluster-file". Several meta servers share one FoundationDB; a
	// Badger directory belongs to one process.
	KV string `toml:"kv"`
	// Token is the cluster token every RPC must carry.
	Token string `toml:"token"`
	// Mgmtd lists mgmtd addresses. Empty runs standalone: no registration,
	// and new files all start at chain 0 of their table (tests, development).
	Mgmtd []string `toml:"mgmtd"`
	// NodeID is this server's node id in mgmtd (0: mgmtd assigns one at
	// each start; meta keeps no local state, so nothing needs it stable).
	NodeID uint32 `toml:"node_id"`
	// Hostname is reported to mgmtd (default: os.Hostname).
	Hostname string `toml:"hostname"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`

	// RootChainTable, RootChunkSize and RootStripeSize are the layout of
	// "/" when the file system is first created (later: SetDirLayout).
	RootChainTable uint32 `toml:"root_chain_table"`
	RootChunkSize  uint32 `toml:"root_chunk_size"`
	RootStripeSize uint32 `toml:"root_stripe_size"`
	// IDBatch is how many inode ids the server reserves per allocation.
	IDBatch uint64 `toml:"id_batch"`
	// ClientTTL is how long write sessions outlive a client's last renewal.
	ClientTTL Duration `toml:"client_ttl"`
	// GCInterval and PruneInterval pace the collector of removed files'
	// chunks and the pruner of dead clients' sessions.
	GCInterval    Duration `toml:"gc_interval"`
	PruneInterval Duration `toml:"prune_interval"`
	// GCBatch bounds the entries the collector handles per transaction.
	GCBatch int `toml:"gc_batch"`
}

// DefaultConfig returns the defaults `emberfs meta --print-config` prints.
func DefaultConfig() Config {
	return Config{
		Listen:         "127.0.0.1:7200",
		MetricsListen:  "127.0.0.1:7290",
		KV:             "badger:/var/lib/emberfs/meta",
		Mgmtd:          []string{"127.0.0.1:7100"},
		LogLevel:       "info",
		RootChainTable: 1,
		RootChunkSize:  4 << 20,
		RootStripeSize: 1,
		IDBatch:        4096,
		ClientTTL:      Duration{Duration: 60 * time.Second},
		GCInterval:     Duration{Duration: 5 * time.Second},
		PruneInterval:  Duration{Duration: 30 * time.Second},
		GCBatch:        128,
	}
}

// LoadConfig reads a TOML file over the defaults and rejects unknown keys,
// so that a misspelt setting is an error rather than silently ignored.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	if err := tomlconfig.Load(path, "meta", &cfg); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// Validate checks settings that would make the service misbehave.
func (c Config) Validate() error {
	switch {
	case c.Listen == "":
		return fmt.Errorf("meta config: listen address is empty")
	case c.KV == "":
		return fmt.Errorf("meta config: kv is empty (want memory, badger:/dir or fdb:/cluster-file)")
	case c.Token == "":
		return fmt.Errorf("meta config: no cluster token: set token in the config, pass --token, or set EMBERFS_TOKEN")
	case c.RootChunkSize == 0:
		return fmt.Errorf("meta config: root_chunk_size must be positive")
	case c.RootStripeSize == 0:
		return fmt.Errorf("meta config: root_stripe_size must be positive")
	case c.IDBatch == 0:
		return fmt.Errorf("meta config: id_batch must be positive")
	case c.ClientTTL.Duration <= 0:
		return fmt.Errorf("meta config: client_ttl %v must be positive", c.ClientTTL)
	case c.GCInterval.Duration <= 0:
		return fmt.Errorf("meta config: gc_interval %v must be positive", c.GCInterval)
	case c.PruneInterval.Duration <= 0:
		return fmt.Errorf("meta config: prune_interval %v must be positive", c.PruneInterval)
	case c.GCBatch <= 0:
		return fmt.Errorf("meta config: gc_batch %d must be positive", c.GCBatch)
	}
	for _, a := range c.Mgmtd {
		if a == "" {
			return fmt.Errorf("meta config: empty address in mgmtd")
		}
	}
	return nil
}

// TOML renders the config as a TOML document.
func (c Config) TOML() string {
	return tomlconfig.Encode(c)
}
