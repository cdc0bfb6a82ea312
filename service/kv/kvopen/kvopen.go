// Package kvopen opens a kv.Engine from a one-string spec, as given on the
// command line or in a config file:
//
//	memory                 in-memory Badger (tests, throwaway clusters)
//	badger:/var/lib/x      durable Badger in a directory
//	/var/lib/x             the same: a bare path means Badger
//	fdb:/etc/fdb.cluster   FoundationDB (binaries built with -tags fdb)
//	fdb                    FoundationDB with the default cluster file
//	etcd:h1:2379,h2:2379   etcd v3, the members' client addresses
//	etcd:h1:2379/emberfs/  the same, every key under the prefix "emberfs/"
package kvopen

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/emberfs/emberfs/service/kv"
	"github.com/emberfs/emberfs/service/kv/badgerkv"
	"github.com/emberfs/emberfs/service/kv/etcdkv"
)

// Options apply to whichever engine the spec names; zero values are the
// engines' defaults.
type Options struct {
	MaxRetries int
	Logger     *slog.Logger
}

// ErrFDBNotBuilt is returned for fdb specs by binaries built without the
// fdb build tag.
var ErrFDBNotBuilt = errors.New("kvopen: this binary has no FoundationDB engine; rebuild with -tags fdb (needs the FoundationDB client library libfdb_c and its headers)")

// Spec forms, for error messages.
const specHelp = `want "memory", "badger:DIR", a directory path, "fdb:CLUSTER_FILE" or "etcd:HOST:PORT,HOST:PORT[/PREFIX]"`

// openFDB is set by open_fdb.go when the binary is built with -tags fdb.
var openFDB func(clusterFile string, opts Options) (kv.Engine, error)

// Open opens the engine spec names, with default options.
func Open(spec string) (kv.Engine, error) { return OpenWith(spec, Options{}) }

// OpenWith opens the engine spec names.
func OpenWith(spec string, opts Options) (kv.Engine, error) {
	scheme, arg, err := ParseSpec(spec)
	if err != nil {
		return nil, err
	}
	bopts := badgerkv.Options{MaxRetries: opts.MaxRetries, Logger: opts.Logger}
	switch scheme {
	case "memory":
		return badgerkv.OpenMemory(bopts)
	case "badger":
		return badgerkv.Open(arg, bopts)
	case "fdb":
		if openFDB == nil {
			return nil, fmt.Errorf("KV spec %q: %w", spec, ErrFDBNotBuilt)
		}
		return openFDB(arg, opts)
	case "etcd":
		endpoints, prefix, err := ParseEtcd(arg)
		if err != nil {
			return nil, fmt.Errorf("KV spec %q: %w", spec, err)
		}
		return etcdkv.Open(etcdkv.Options{Endpoints: endpoints, Prefix: prefix, MaxRetries: opts.MaxRetries, Logger: opts.Logger})
	}
	panic("unreachable: ParseSpec returned scheme " + scheme)
}

// ParseSpec splits spec into an engine name ("memory", "badger", "fdb" or
// "etcd") and its argument (a directory, a cluster file, etcd's members, or "").
func ParseSpec(spec string) (scheme, arg string, err error) {
	if strings.TrimSpace(spec) == "" {
		return "", "", fmt.Errorf("kvopen: empty KV spec; %s", specHelp)
	}
	scheme, arg, hasColon := strings.Cut(spec, ":")
	if !hasColon || !isScheme(scheme) {
		switch spec {
		case "memory", "fdb":
			return spec, "", nil
		case "badger":
			return "", "", fmt.Errorf("kvopen: KV spec %q names no directory; %s", spec, specHelp)
		}
		return "badger", spec, nil // a bare path
	}
	switch scheme {
	case "memory":
		if arg != "" {
			return "", "", fmt.Errorf("kvopen: KV spec %q: the memory engine takes no argument", spec)
		}
		return scheme, "", nil
	case "badger":
		if arg == "" {
			return "", "", fmt.Errorf("kvopen: KV spec %q names no directory; %s", spec, specHelp)
		}
		return scheme, arg, nil
	case "fdb":
		return scheme, arg, nil // "" selects FoundationDB's default cluster file
	case "etcd":
		if _, _, err := ParseEtcd(arg); err != nil {
			return "", "", fmt.Errorf("kvopen: KV spec %q: %w", spec, err)
		}
		return scheme, arg, nil
	}
	return "", "", fmt.Errorf("kvopen: unknown KV engine %q in spec %q; %s", scheme, spec, specHelp)
}

// isScheme reports whether s looks like a URL scheme (a letter, then
// letters, digits, '+', '-' or '.'), so that "./data:1" stays a path.
func isScheme(s string) bool {
	if s == "" || !isLetter(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isLetter(c) && !('0' <= c && c <= '9') && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// ParseEtcd splits the argument of an etcd spec, "HOST:PORT,HOST:PORT[/PREFIX]",
// into the members' client addresses and the key prefix (everything after
// the first '/', "" if none).
func ParseEtcd(arg string) (endpoints []string, prefix string, err error) {
	hosts, prefix, _ := strings.Cut(arg, "/")
	if hosts == "" {
		return nil, "", fmt.Errorf("etcd spec names no members; want etcd:HOST:PORT,HOST:PORT[/PREFIX]")
	}
	for _, h := range strings.Split(hosts, ",") {
		host, port, ok := strings.Cut(h, ":")
		if !ok || host == "" || port == "" || strings.Trim(port, "0123456789") != "" {
			return nil, "", fmt.Errorf("etcd member %q is not HOST:PORT (no scheme: etcd:10.0.0.1:2379,10.0.0.2:2379)", h)
		}
		endpoints = append(endpoints, h)
	}
	return endpoints, prefix, nil
}
