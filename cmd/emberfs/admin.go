package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/emberfs/emberfs/service/mgmtd"
	"github.com/emberfs/emberfs/service/mgmtd/mgmtdclient"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
)

func init() { subcommands = append(subcommands, newAdminCmd) }

// adminTarget is how admin and status reach mgmtd: the cluster found as
// every other command finds it (clusterFlags: flags, environment, client
// config file), and --timeout for the whole call.
type adminTarget struct {
	cf      clusterFlags
	timeout time.Duration
}

func (a *adminTarget) addFlags(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	a.cf.addClusterTo(f)
	f.DurationVar(&a.timeout, "timeout", 10*time.Second, "give up after this long")
}

// call runs fn against the mgmtd primary, following redirects.
func (a *adminTarget) call(cmd *cobra.Command, fn func(ctx context.Context, cl mgmtdpb.MgmtdClient) error) error {
	addrs, token, err := a.cf.resolve()
	if err != nil {
		return err
	}
	conn, err := mgmtdclient.Dial(addrs, token)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout)
	defer cancel()
	return conn.Call(ctx, fn)
}

func newAdminCmd() *cobra.Command {
	a := &adminTarget{}
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Cluster administration through mgmtd (chain tables, nodes, targets, config)",
	}
	a.addFlags(cmd)
	out := func(cmd *cobra.Command) *tabOut { return newTabOut(cmd.OutOrStdout()) }

	var replicas uint32
	var tableID uint32
	var targets string
	create := &cobra.Command{
		Use:   "create-chain-table",
		Short: "Place storage targets into chains and make a chain table",
		Long: `Groups targets into chains of --replicas targets on distinct nodes, spreading
each node's chain partners over as many other nodes as possible. Without
--targets every registered target not yet in a chain is used.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &mgmtdpb.CreateChainTableReq{TableId: tableID, ReplicationFactor: replicas}
			if targets != "" {
				for _, s := range strings.Split(targets, ",") {
					id, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
					if err != nil {
						return fmt.Errorf("--targets: %q is not a target id", s)
					}
					req.TargetIds = append(req.TargetIds, id)
				}
			}
			return a.call(cmd, func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
				rsp, err := cl.CreateChainTable(ctx, req)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "created chain table %d with %d chains of %d replicas\n",
					rsp.Table.TableId, len(rsp.Chains), rsp.Table.ReplicationFactor)
				o := out(cmd)
				printChains(o, rsp.Chains)
				return o.flush()
			})
		},
	}
	create.Flags().Uint32Var(&replicas, "replicas", 3, "replication factor (targets per chain)")
	create.Flags().Uint32Var(&tableID, "table", 0, "table id (default: next free)")
	create.Flags().StringVar(&targets, "targets", "", "comma-separated target ids (default: all unplaced)")

	list := func(use, short string, fn func(ctx context.Context, cl mgmtdpb.MgmtdClient, o *tabOut) error) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return a.call(cmd, func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
					o := out(cmd)
					if err := fn(ctx, cl, o); err != nil {
						return err
					}
					return o.flush()
				})
			},
		}
	}
	listNodes := list("list-nodes", "List registered nodes", func(ctx context.Context, cl mgmtdpb.MgmtdClient, o *tabOut) error {
		rsp, err := cl.ListNodes(ctx, &mgmtdpb.ListNodesReq{})
		if err == nil {
			printNodes(o, rsp.Nodes, time.Now())
		}
		return err
	})
	listTargets := list("list-targets", "List storage targets with public and local states", func(ctx context.Context, cl mgmtdpb.MgmtdClient, o *tabOut) error {
		rsp, err := cl.ListTargets(ctx, &mgmtdpb.ListTargetsReq{})
		if err == nil {
			printTargets(o, rsp.Targets)
		}
		return err
	})
	listChains := list("list-chains", "List chains, head first", func(ctx context.Context, cl mgmtdpb.MgmtdClient, o *tabOut) error {
		rsp, err := cl.ListChains(ctx, &mgmtdpb.ListChainsReq{})
		if err == nil {
			printChains(o, rsp.Chains)
		}
		return err
	})
	listTables := list("list-tables", "List chain tables", func(ctx context.Context, cl mgmtdpb.MgmtdClient, o *tabOut) error {
		rsp, err := cl.ListTables(ctx, &mgmtdpb.ListTablesReq{})
		if err == nil {
			printTables(o, rsp.Tables)
		}
		return err
	})

	nodeCmd := func(use, short string, disabled bool) *cobra.Command {
		return &cobra.Command{
			Use: use + " NODE_ID", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				id, err := strconv.ParseUint(args[0], 10, 32)
				if err != nil {
					return fmt.Errorf("%s: %q is not a node id", use, args[0])
				}
				return a.call(cmd, func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
					rsp, err := cl.SetNodeDisabled(ctx, &mgmtdpb.SetNodeDisabledReq{NodeId: uint32(id), Disabled: disabled})
					if err == nil {
						fmt.Fprintf(cmd.OutOrStdout(), "node %d is %s\n", rsp.Node.NodeId, mgmtd.NodeStatusName(rsp.Node.Status))
					}
					return err
				})
			},
		}
	}

	var undo bool
	offline := &cobra.Command{
		Use:   "offline-target TARGET_ID",
		Short: "Take a target out of its chain (it stays offline until --undo)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil {
				return fmt.Errorf("offline-target: %q is not a target id", args[0])
			}
			return a.call(cmd, func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
				rsp, err := cl.OfflineTarget(ctx, &mgmtdpb.OfflineTargetReq{TargetId: id, Undo: undo})
				if err != nil {
					return err
				}
				if rsp.Target.AdminOffline {
					fmt.Fprintf(cmd.OutOrStdout(), "target %d marked offline\n", id)
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "target %d offline mark cleared; it will recover\n", id)
				}
				return nil
			})
		},
	}
	offline.Flags().BoolVar(&undo, "undo", false, "clear the mark so the target recovers")

	getConfig := &cobra.Command{
		Use: "get-config", Short: "Print the cluster config", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd, func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
				rsp, err := cl.GetConfig(ctx, &mgmtdpb.GetConfigReq{})
				if err == nil {
					printConfig(cmd, rsp.Config)
				}
				return err
			})
		},
	}
	setConfig := &cobra.Command{
		Use:   "set-config KEY=VALUE...",
		Short: "Change cluster settings",
		Long: fmt.Sprintf(`Keys: %s, %s, or a namespaced key such as meta.name
for another service (an empty value deletes a namespaced key).`, mgmtd.ConfigHeartbeatInterval, mgmtd.ConfigNodeFailureTimeout),
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set := map[string]string{}
			for _, kvArg := range args {
				k, v, ok := strings.Cut(kvArg, "=")
				if !ok || k == "" {
					return fmt.Errorf("set-config: %q is not KEY=VALUE", kvArg)
				}
				set[k] = v
			}
			return a.call(cmd, func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
				rsp, err := cl.SetConfig(ctx, &mgmtdpb.SetConfigReq{Set: set})
				if err == nil {
					printConfig(cmd, rsp.Config)
				}
				return err
			})
		},
	}
	cmd.AddCommand(create, listNodes, listTargets, listChains, listTables,
		nodeCmd("disable-node", "Disable a node: its targets go offline", true),
		nodeCmd("enable-node", "Enable a disabled node: its targets recover", false),
		offline, getConfig, setConfig, newAdminFsckCmd())
	return cmd
}

func printConfig(cmd *cobra.Command, c *mgmtdpb.ClusterConfig) {
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "%s = %d\n", mgmtd.ConfigHeartbeatInterval, c.HeartbeatIntervalMs)
	fmt.Fprintf(w, "%s = %d\n", mgmtd.ConfigNodeFailureTimeout, c.NodeFailureTimeoutMs)
	keys := make([]string, 0, len(c.Extra))
	for k := range c.Extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "%s = %q\n", k, c.Extra[k])
	}
}
