// Package buildinfo holds the version stamped into the emberfs binary.
package buildinfo

// Version is overridden at build time with -ldflags "-X ...buildinfo.Version=...".
var Version = "0.1.0-dev"
