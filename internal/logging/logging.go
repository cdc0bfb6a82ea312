// Package logging builds the slog loggers every role writes with, from the
// log_level setting of its config.
package logging

import (
	"fmt"
	"io"
	"log/slog"
)

// New returns a text logger on w at level ("debug", "info", "warn" or
// "error"); role names the service in the error for a bad level.
func New(w io.Writer, level, role string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("%s: log_level %q: want debug, info, warn or error", role, level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
