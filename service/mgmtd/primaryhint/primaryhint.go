// Package primaryhint builds and reads the errcode.NotPrimary errors that a
// standby mgmtd returns, which carry the primary's address so that callers
// can redirect. It is a leaf package shared by the server and mgmtdclient.Conn.
package primaryhint

import (
	"errors"

	"github.com/emberfs/emberfs/internal/errcode"
)

// Error returns a NotPrimary error naming the primary's address (empty if
// this instance does not know it yet) as a typed redirect.
func Error(self, primary string) error {
	if primary == "" {
		return errcode.New(errcode.NotPrimary, "mgmtd %s is not the primary; primary unknown (election in progress)", self)
	}
	return errcode.New(errcode.NotPrimary, "mgmtd %s is not the primary; the primary is %s", self, primary).WithRedirect(primary)
}

// Addr is the primary's address a NotPrimary error carries ("" if the
// error is another kind or names no primary).
func Addr(err error) string {
	var e *errcode.Error
	if !errcode.Is(err, errcode.NotPrimary) || !errors.As(err, &e) {
		return ""
	}
	return e.Redirect()
}
