package tomlconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type sample struct {
	Listen  string   `toml:"listen"`
	Timeout Duration `toml:"timeout"`
}

func write(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadOverDefaults(t *testing.T) {
	cfg := sample{Listen: "default", Timeout: Duration{time.Second}}
	if err := Load(write(t, `timeout = "250ms"`), "test", &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "default" || cfg.Timeout.Duration != 250*time.Millisecond {
		t.Fatalf("got %+v", cfg)
	}
}

func TestUnknownKeyAndBadDuration(t *testing.T) {
	var cfg sample
	err := Load(write(t, `lisen = "x"`), "mgmtd", &cfg)
	if err == nil || !strings.Contains(err.Error(), `unknown setting "lisen"`) || !strings.Contains(err.Error(), "mgmtd config") {
		t.Fatalf("misspelt key: %v", err)
	}
	err = Load(write(t, `timeout = "soon"`), "meta", &cfg)
	if err == nil || !strings.Contains(err.Error(), `bad duration "soon"`) {
		t.Fatalf("bad duration: %v", err)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	in := sample{Listen: "127.0.0.1:1", Timeout: Duration{1500 * time.Millisecond}}
	text := Encode(in)
	if !strings.Contains(text, `timeout = "1.5s"`) {
		t.Fatalf("encoded: %s", text)
	}
	var out sample
	if err := Load(write(t, text), "test", &out); err != nil || out != in {
		t.Fatalf("round trip: %+v, %v", out, err)
	}
}
