// Package tomlconfig holds what every role's TOML config file shares:
// durations written as "500ms", strict loading over defaults (an unknown
// key is an error, so a misspelt setting is never silently ignored), and
// rendering for --print-config.
package tomlconfig

import (
	"bytes"
	"fmt"
	"time"

	"github.com/BurntSushi/toml"
)

// Duration is a time.Duration written in TOML as a string ("500ms", "2s").
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("bad duration %q: %w", b, err)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Load decodes the TOML file at path into cfg, which holds the defaults;
// role names the service in errors ("mgmtd config x.toml: ...").
func Load(path, role string, cfg any) error {
	md, err := toml.DecodeFile(path, cfg)
	if err != nil {
		return fmt.Errorf("%s config %s: %w", role, path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return fmt.Errorf("%s config %s: unknown setting %q", role, path, und[0].String())
	}
	return nil
}

// Encode renders cfg as a TOML document.
func Encode(cfg any) string {
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(cfg); err != nil {
		return "# encode error: " + err.Error()
	}
	return b.String()
}
