//go:build tools

// Package tools pins the project's chosen dependencies in go.mod before every
// one of them is imported by code, so parallel work never races on go.mod.
package tools

import (
	_ "github.com/BurntSushi/toml"
	_ "github.com/anishathalye/porcupine"
	_ "github.com/dgraph-io/badger/v4"
	_ "github.com/dgraph-io/ristretto/v2"
	_ "github.com/hanwen/go-fuse/v2/fs"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/spf13/cobra"
	_ "google.golang.org/grpc"
	_ "google.golang.org/protobuf/proto"
)
