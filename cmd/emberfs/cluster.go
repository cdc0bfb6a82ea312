package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
)

// clusterFlags is how the commands that connect a native client without a
// mount (ls, cat, cp, top, kvcache, checkpoint, ...) find the cluster: --mgmtd/--token, else $EMBERFS_MGMTD/$EMBERFS_TOKEN, else the
// client config file (--config, $EMBERFS_CONFIG, or
// ~/.config/emberfs/client.toml when it exists). See docs/cli.md.
type clusterFlags struct {
	mgmtd, token, config string
	timeout              time.Duration
}

// clientFileConfig is the client config file.
type clientFileConfig struct {
	Mgmtd any    `toml:"mgmtd"` // "host:port,host:port" or ["host:port", ...]
	Token string `toml:"token"`
}

// add registers the flags on cmd alone; addPersistent on cmd and its
// subcommands (kvcache, checkpoint).
func (f *clusterFlags) add(cmd *cobra.Command)           { f.addTo(cmd.Flags()) }
func (f *clusterFlags) addPersistent(cmd *cobra.Command) { f.addTo(cmd.PersistentFlags()) }

func (f *clusterFlags) addTo(fl *pflag.FlagSet) {
	f.addClusterTo(fl)
	fl.DurationVar(&f.timeout, "connect-timeout", 5*time.Second, "how long to wait for the cluster before failing")
}

// addClusterTo registers the flags that name the cluster alone (admin and
// status bound their calls with --timeout instead).
func (f *clusterFlags) addClusterTo(fl *pflag.FlagSet) {
	fl.StringVar(&f.mgmtd, "mgmtd", "", "mgmtd addresses, comma separated (default $EMBERFS_MGMTD, then the config file)")
	fl.StringVar(&f.token, "token", "", "cluster token (default $EMBERFS_TOKEN, then the config file)")
	fl.StringVar(&f.config, "config", "", "client config file (default $EMBERFS_CONFIG, then ~/.config/emberfs/client.toml if present)")
}

// defaultClientConfig is the config file used when neither --config nor
// $EMBERFS_CONFIG names one (it need not exist).
func defaultClientConfig() string {
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "emberfs", "client.toml")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".config", "emberfs", "client.toml")
	}
	return ""
}

// loadClientConfig reads a client config file; unknown keys are errors so
// that a misspelt key does not silently fall back to a default.
func loadClientConfig(path string) (addrs []string, token string, err error) {
	var c clientFileConfig
	md, err := toml.DecodeFile(path, &c)
	if err != nil {
		return nil, "", fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return nil, "", fmt.Errorf("config %s: unknown key(s) %s (known: mgmtd, token)", path, strings.Join(keys, ", "))
	}
	switch v := c.Mgmtd.(type) {
	case nil:
	case string:
		addrs = mgmtdclient.ParseAddrs(v)
	case []any:
		for _, a := range v {
			s, ok := a.(string)
			if !ok {
				return nil, "", fmt.Errorf("config %s: mgmtd holds %v, not an address string", path, a)
			}
			addrs = append(addrs, mgmtdclient.ParseAddrs(s)...)
		}
	default:
		return nil, "", fmt.Errorf("config %s: mgmtd must be a string or a list of strings, not %T", path, v)
	}
	return addrs, c.Token, nil
}

// resolve picks the address list and token: flags, then environment, then
// the config file; each of the two is taken from the first place that has it.
func (f *clusterFlags) resolve() (addrs []string, token string, err error) {
	addrs, token = mgmtdclient.ParseAddrs(f.mgmtd), f.token
	if len(addrs) == 0 {
		addrs = mgmtdclient.ParseAddrs(os.Getenv("EMBERFS_MGMTD"))
	}
	if token == "" {
		token = os.Getenv("EMBERFS_TOKEN")
	}
	if len(addrs) > 0 && token != "" {
		return addrs, token, nil
	}
	path, explicit := f.config, f.config != ""
	if path == "" {
		path, explicit = os.Getenv("EMBERFS_CONFIG"), os.Getenv("EMBERFS_CONFIG") != ""
	}
	if path == "" {
		path = defaultClientConfig()
	}
	if path != "" {
		if _, serr := os.Stat(path); serr == nil || explicit {
			faddrs, ftoken, err := loadClientConfig(path)
			if err != nil {
				return nil, "", err
			}
			if len(addrs) == 0 {
				addrs = faddrs
			}
			if token == "" {
				token = ftoken
			}
		}
	}
	if len(addrs) == 0 {
		return nil, "", errors.New("no cluster address: pass --mgmtd host:port, set EMBERFS_MGMTD, or put mgmtd = \"host:port\" in the config file (docs/cli.md)")
	}
	if token == "" {
		return nil, "", errors.New("no cluster token: pass --token, set EMBERFS_TOKEN, or put token = \"...\" in the config file (docs/cli.md)")
	}
	return addrs, token, nil
}

// connect makes a client with cfg's tunables, failing within the connect
// timeout with one line that says what was tried when the cluster does not
// answer.
func (f *clusterFlags) connect(ctx context.Context, cfg client.Config) (*client.Client, error) {
	addrs, token, err := f.resolve()
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	cfg.MgmtdAddrs, cfg.Token, cfg.MetaRetryWindow = addrs, token, f.timeout
	c, err := client.New(cctx, cfg)
	if err != nil {
		why := ""
		if cctx.Err() == nil {
			// Failed before the timeout: the reason (a refused token, a
			// bad address) says more than the generic hint.
			why = ": " + err.Error()
		}
		return nil, fmt.Errorf("cannot reach the cluster at mgmtd %s within %v (is it running, and are the address and token right?)%s", strings.Join(addrs, ","), f.timeout, why)
	}
	return c, nil
}

// withClient connects a client with cfg's tunables, runs fn with it and
// closes it.
func (f *clusterFlags) withClient(cmd *cobra.Command, cfg client.Config, fn func(ctx context.Context, c *client.Client) error) error {
	c, err := f.connect(cmd.Context(), cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(cmd.Context(), c)
}

// cliUser is who the mount-less commands act as: the calling user, as a
// mount would see them.
func cliUser() meta.User {
	return meta.User{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
}

// emberPath turns a command-line EmberFS path into an absolute path:
// "emberfs://a/b", "emberfs:///a/b", "emberfs:/a/b", "/a/b" and "a/b" all
// name /a/b.
func emberPath(s string) string {
	s = strings.TrimPrefix(s, "emberfs:")
	s = strings.TrimLeft(s, "/")
	return filepath.Clean("/" + s)
}

// isEmberURI reports whether a cp argument names EmberFS (an "emberfs:"
// prefix) rather than the local file system.
func isEmberURI(s string) bool { return strings.HasPrefix(s, "emberfs:") }

// pathErr renders an EmberFS error as "op PATH: reason": the errno's text
// when the error is a plain file-system condition (not found, exists, not a
// directory ...), the whole error otherwise (EIO and the like, where the
// detail matters).
func pathErr(op, path string, err error) error {
	if err == nil {
		return nil
	}
	if errno := errcode.ErrnoOf(err); errno != 0 && errno != syscall.EIO && errcode.CodeOf(err) != errcode.Internal {
		return fmt.Errorf("%s %s: %s", op, path, errno.Error())
	}
	return fmt.Errorf("%s %s: %w", op, path, err)
}

// argsAtLeast is cobra.MinimumNArgs with a message naming what is missing.
func argsAtLeast(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return fmt.Errorf("%s: missing %s (usage: emberfs %s)", cmd.Name(), what, cmd.Use)
		}
		return nil
	}
}
