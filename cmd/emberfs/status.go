package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/emberfs/emberfs/service/mgmtd"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
)

func init() { subcommands = append(subcommands, newStatusCmd) }

func newStatusCmd() *cobra.Command {
	a := &adminTarget{}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print the cluster's nodes, targets, chains and chain tables",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd, func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
				rsp, err := cl.GetRoutingInfo(ctx, &mgmtdpb.GetRoutingInfoReq{})
				if err != nil {
					return err
				}
				return printStatus(cmd.OutOrStdout(), rsp.Info, time.Now())
			})
		},
	}
	a.addFlags(cmd)
	return cmd
}

func printStatus(w io.Writer, info *mgmtdpb.RoutingInfo, now time.Time) error {
	fmt.Fprintf(w, "routing version %d, primary mgmtd %s\n", info.Version, info.PrimaryAddress)
	o := newTabOut(w)
	o.section("NODES")
	printNodes(o, info.Nodes, now)
	o.section("TARGETS")
	printTargets(o, info.Targets)
	o.section("CHAINS")
	printChains(o, info.Chains)
	o.section("CHAIN TABLES")
	printTables(o, info.Tables)
	return o.flush()
}

// tabOut writes aligned tables; sections are separated by a blank line.
type tabOut struct {
	w     io.Writer
	tw    *tabwriter.Writer
	first bool
}

func newTabOut(w io.Writer) *tabOut {
	return &tabOut{w: w, tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0), first: true}
}

func (o *tabOut) row(cols ...any) {
	s := make([]string, len(cols))
	for i, c := range cols {
		s[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(o.tw, strings.Join(s, "\t"))
}

func (o *tabOut) section(title string) {
	_ = o.tw.Flush()
	if !o.first {
		fmt.Fprintln(o.w)
	}
	o.first = false
	fmt.Fprintln(o.w, title)
}

func (o *tabOut) flush() error { return o.tw.Flush() }

func printNodes(o *tabOut, nodes []*mgmtdpb.Node, now time.Time) {
	o.row("ID", "ROLE", "STATUS", "ADDRESS", "DATA ADDRESS", "HOST", "TARGETS", "LAST HEARTBEAT")
	for _, n := range nodes {
		hb := "-"
		if n.LastHeartbeatUnixMs > 0 {
			hb = now.Sub(time.UnixMilli(n.LastHeartbeatUnixMs)).Round(time.Millisecond).String() + " ago"
		}
		ids := make([]string, len(n.TargetIds))
		for i, t := range n.TargetIds {
			ids[i] = fmt.Sprint(t)
		}
		o.row(n.NodeId, mgmtd.RoleName(n.Role), mgmtd.NodeStatusName(n.Status), dash(n.Address),
			dash(n.DataAddress), dash(n.Hostname), dash(strings.Join(ids, ",")), hb)
	}
}

func printTargets(o *tabOut, targets []*mgmtdpb.Target) {
	o.row("ID", "NODE", "CHAIN", "PUBLIC", "LOCAL", "FREE", "CAPACITY", "CHAIN VER SEEN", "NOTE")
	for _, t := range targets {
		chain, note := "-", ""
		if t.ChainId != 0 {
			chain = fmt.Sprint(t.ChainId)
		}
		if t.AdminOffline {
			note = "admin offline"
		}
		o.row(t.TargetId, t.NodeId, chain, mgmtd.PublicStateName(t.PublicState), mgmtd.LocalStateName(t.LocalState),
			bytesString(t.FreeBytes), bytesString(t.CapacityBytes), t.ReportedChainVersion, dash(note))
	}
}

func printChains(o *tabOut, chains []*mgmtdpb.Chain) {
	o.row("ID", "VERSION", "TARGETS (head first)")
	for _, c := range chains {
		parts := make([]string, len(c.Targets))
		for i, t := range c.Targets {
			parts[i] = fmt.Sprintf("%d(%s)", t.TargetId, mgmtd.PublicStateName(t.PublicState))
		}
		o.row(c.ChainId, c.Version, strings.Join(parts, " "))
	}
}

func printTables(o *tabOut, tables []*mgmtdpb.ChainTable) {
	o.row("ID", "VERSION", "REPLICAS", "CHAINS")
	for _, t := range tables {
		ids := make([]string, len(t.ChainIds))
		for i, c := range t.ChainIds {
			ids[i] = fmt.Sprint(c)
		}
		o.row(t.TableId, t.Version, t.ReplicationFactor, strings.Join(ids, ","))
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func bytesString(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}
