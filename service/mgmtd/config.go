package mgmtd

import (
	"fmt"
	"time"

	"github.com/emberfs/emberfs/internal/tomlconfig"
)

// Duration is a time.Duration written in TOML as a string ("500ms", "2s").
type Duration = tomlconfig.Duration

// Config is the mgmtd process configuration (TOML). Cluster-wide settings
// that every node follows (heartbeat interval, failure timeout) start from
// the values here the first time a cluster's KV is used; after that the
// KV copy is authoritative and changed with `emberfs admin set-config`.
type Config struct {
	// Listen is the gRPC address ("host:port"; port 0 picks one).
	Listen string `toml:"listen"`
	// AdvertiseAddress is the address other nodes use to reach this
	// instance, handed out in redirects (default: the listen address).
	AdvertiseAddress string `toml:"advertise_address"`
	// MetricsListen serves Prometheus /metrics over HTTP ("" disables).
	MetricsListen string `toml:"metrics_listen"`
	// KV names the cluster-state store: "memory", "badger:/dir" or "fdb:/cluster-file".
	KV string `toml:"kv"`
	// Token is the cluster token every RPC must carry.
	Token string `toml:"token"`
	// InstanceID names this mgmtd in the primary lease (default: random).
	InstanceID string `toml:"instance_id"`
	// PrimaryLease is how long a primary's lease key lasts without renewal;
	// a standby takes over within about two of these after a primary dies.
	PrimaryLease Duration `toml:"primary_lease"`
	// ScanInterval is how often leases and chains are checked (changes
	// reported in heartbeats also trigger a scan at once).
	ScanInterval Duration `toml:"scan_interval"`
	// HeartbeatInterval and NodeFailureTimeout seed the cluster config.
	HeartbeatInterval  Duration `toml:"heartbeat_interval"`
	NodeFailureTimeout Duration `toml:"node_failure_timeout"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`
}

// DefaultConfig returns the defaults `emberfs mgmtd --print-config` prints.
func DefaultConfig() Config {
	return Config{
		Listen:             "127.0.0.1:7100",
		MetricsListen:      "127.0.0.1:7190",
		KV:                 "badger:/var/lib/emberfs/mgmtd",
		PrimaryLease:       Duration{Duration: 2 * time.Second},
		ScanInterval:       Duration{Duration: 100 * time.Millisecond},
		HeartbeatInterval:  Duration{Duration: 500 * time.Millisecond},
		NodeFailureTimeout: Duration{Duration: 2 * time.Second},
		LogLevel:           "info",
	}
}

// LoadConfig reads a TOML file over the defaults and rejects unknown keys,
// so that a misspelt setting is an error rather than silently ignored.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	if err := tomlconfig.Load(path, "mgmtd", &cfg); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// Validate checks settings that would make the service misbehave.
func (c Config) Validate() error {
	switch {
	case c.Listen == "":
		return fmt.Errorf("mgmtd config: listen address is empty")
	case c.KV == "":
		return fmt.Errorf("mgmtd config: kv is empty (want memory, badger:/dir or fdb:/cluster-file)")
	case c.PrimaryLease.Duration <= 0:
		return fmt.Errorf("mgmtd config: primary_lease %v must be positive", c.PrimaryLease)
	case c.ScanInterval.Duration <= 0:
		return fmt.Errorf("mgmtd config: scan_interval %v must be positive", c.ScanInterval)
	}
	return validateTimes(c.HeartbeatInterval.Duration, c.NodeFailureTimeout.Duration)
}

func validateTimes(hb, fail time.Duration) error {
	if hb <= 0 {
		return fmt.Errorf("heartbeat interval %v must be positive", hb)
	}
	if fail < 2*hb {
		return fmt.Errorf("node failure timeout %v must be at least twice the heartbeat interval %v", fail, hb)
	}
	return nil
}

// TOML renders the config as a TOML document.
func (c Config) TOML() string {
	return tomlconfig.Encode(c)
}
