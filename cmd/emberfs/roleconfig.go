package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
)

// roleConfig is the config plumbing every server role (mgmtd, meta,
// storage) shares: --config and --print-config, flags bound straight to
// the config's fields that override the file only when given, and
// secrets from the environment (the token from EMBERFS_TOKEN) when neither
// names them.
type roleConfig[C any] struct {
	cfg         C
	path        string
	printConfig bool
	defaults    func() C
	load        func(path string) (C, error)
	toml        func(*C) string
	fromEnv     []envSecret[C]
}

// envSecret is a config field taken from an environment variable when
// neither the file nor a flag set it.
type envSecret[C any] struct {
	env   string
	field func(*C) *string
}

// newRoleConfig starts from the role's defaults (so --help shows them) and
// registers --config, --print-config and --token on cmd.
func newRoleConfig[C any](cmd *cobra.Command, defaults func() C, load func(string) (C, error), token func(*C) *string, toml func(*C) string) *roleConfig[C] {
	rc := &roleConfig[C]{cfg: defaults(), defaults: defaults, load: load, toml: toml}
	rc.secretFromEnv("EMBERFS_TOKEN", token)
	f := cmd.Flags()
	f.StringVar(&rc.path, "config", "", "TOML config file")
	f.BoolVar(&rc.printConfig, "print-config", false, "print the effective config (defaults, file, flags) and exit")
	f.StringVar(token(&rc.cfg), "token", "", "cluster token (overrides the config)")
	return rc
}

// secretFromEnv makes env the source of field when neither the file nor a
// flag set it (secrets are better kept out of files and command lines).
func (rc *roleConfig[C]) secretFromEnv(env string, field func(*C) *string) {
	rc.fromEnv = append(rc.fromEnv, envSecret[C]{env, field})
}

// runE is the RunE every role shares: the effective config, checked by
// validate, then run with a context that ends on SIGINT or SIGTERM.
func (rc *roleConfig[C]) runE(validate func(*C) error, run func(ctx context.Context, cmd *cobra.Command, cfg C) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		cfg, done, err := rc.resolve(cmd)
		if err != nil || done {
			return err
		}
		if err := validate(cfg); err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return run(ctx, cmd, *cfg)
	}
}

// resolve builds the effective config: defaults, then the file, then the
// flags the user gave. It reports done=true when --print-config printed it.
func (rc *roleConfig[C]) resolve(cmd *cobra.Command) (cfg *C, done bool, err error) {
	f := cmd.Flags()
	given := map[string]string{}
	f.Visit(func(fl *pflag.Flag) {
		if fl.Name != "config" && fl.Name != "print-config" {
			given[fl.Name] = fl.Value.String()
		}
	})
	rc.cfg = rc.defaults()
	if rc.path != "" {
		if rc.cfg, err = rc.load(rc.path); err != nil {
			return nil, false, err
		}
	}
	// The flags write into rc.cfg's fields: setting them again puts the
	// user's values over what the file said.
	for name, v := range given {
		if err := f.Set(name, v); err != nil {
			return nil, false, fmt.Errorf("--%s: %w", name, err)
		}
	}
	for _, e := range rc.fromEnv {
		if v := e.field(&rc.cfg); *v == "" {
			*v = os.Getenv(e.env)
		}
	}
	if rc.printConfig {
		fmt.Fprint(cmd.OutOrStdout(), rc.toml(&rc.cfg))
		return nil, true, nil
	}
	return &rc.cfg, false, nil
}

// addrList is a comma-separated address list flag bound to a []string.
type addrList struct{ p *[]string }

func (a addrList) String() string     { return strings.Join(*a.p, ",") }
func (a addrList) Type() string       { return "addrs" }
func (a addrList) Set(s string) error { *a.p = mgmtdclient.ParseAddrs(s); return nil }
