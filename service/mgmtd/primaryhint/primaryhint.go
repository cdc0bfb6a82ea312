// Package primaryhint builds and reads the errcode.NotPrimary errors that a
// standby mgmtd returns, which carry the primary's address so that callers
// can redirect. It is a leaf package shared by the server and mgmtdclient.Conn.
package primaryhint

import (
	"strings"

	"github.com/emberfs/emberfs/internal/errcode"
)

const marker = "primary="

// Error returns a NotPrimary error naming the primary's address (empty if
// this instance does not know it yet).
func Error(self, primary string) error {
	if primary == "" {
		return errcode.New(errcode.NotPrimary, "mgmtd %s is not the primary; primary unknown (election in progress)", self)
	}
	return errcode.New(errcode.NotPrimary, "mgmtd %s is not the primary; %s%s", self, marker, primary)
}

// Addr extracts the primary's address from a NotPrimary error ("" if the
// error is another kind or names no primary).
func Addr(err error) string {
	if !errcode.Is(err, errcode.NotPrimary) {
		return ""
	}
	msg := err.Error()
	i := strings.LastIndex(msg, marker)
	if i < 0 {
		return ""
	}
	return strings.TrimSpace(msg[i+len(marker):])
}
