package logging

import (
	"bytes"
	"strings"
	"testing"
)

func TestLevels(t *testing.T) {
	var b bytes.Buffer
	l, err := New(&b, "warn", "test")
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown")
	if strings.Contains(b.String(), "hidden") || !strings.Contains(b.String(), "shown") {
		t.Fatalf("output %q", b.String())
	}
	if _, err := New(&b, "loud", "storage"); err == nil || !strings.Contains(err.Error(), `storage: log_level "loud"`) {
		t.Fatalf("bad level: %v", err)
	}
}
