package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/emberfs/emberfs/internal/buildinfo"
)

func TestVersionCommand(t *testing.T) {
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"version"})
	if err := root.Execute(); err != nil {
		t.Fatalf("version: %v", err)
	}
	if got, want := strings.TrimSpace(out.String()), "emberfs "+buildinfo.Version; got != want {
		t.Fatalf("version printed %q, want %q", got, want)
	}
}

func TestUnknownCommandFails(t *testing.T) {
	root := newRootCmd()
	root.SetOut(&bytes.Buffer{})
	root.SetErr(&bytes.Buffer{})
	root.SetArgs([]string{"no-such-command"})
	if err := root.Execute(); err == nil {
		t.Fatal("unknown subcommand succeeded, want an error")
	}
}
