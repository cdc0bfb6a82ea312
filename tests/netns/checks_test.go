package netns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/emberfs/emberfs/internal/rpcauth"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
	"github.com/emberfs/emberfs/service/proto/storagepb"
	"github.com/emberfs/emberfs/service/routing"
)

// failureDomainViolations checks every chain of the routing info against
// hostOf (storage node id -> the host its process runs on, taken from the
// address the node registered with): a chain with two replicas on one
// host is returned, described.
func failureDomainViolations(r *routing.Routing, hostOf func(node uint32) (string, error)) ([]string, error) {
	var bad []string
	for _, ch := range r.Info.Chains {
		seen := map[string]uint64{}
		for _, ct := range ch.Targets {
			t, ok := r.Target(ct.TargetId)
			if !ok {
				return nil, fmt.Errorf("chain %d names unknown target %d", ch.ChainId, ct.TargetId)
			}
			h, err := hostOf(t.NodeId)
			if err != nil {
				return nil, err
			}
			if other, dup := seen[h]; dup {
				bad = append(bad, fmt.Sprintf("chain %d: targets %d and %d both on host %s", ch.ChainId, other, ct.TargetId, h))
			}
			seen[h] = ct.TargetId
		}
	}
	return bad, nil
}

// hostOfNode maps a storage node to the host whose IP its registered
// control address carries.
func hostOfNode(r *routing.Routing, ipHost map[string]string) func(uint32) (string, error) {
	return func(id uint32) (string, error) {
		n, ok := r.Node(id)
		if !ok {
			return "", fmt.Errorf("no node %d in routing", id)
		}
		ip, _, err := net.SplitHostPort(n.Address)
		if err != nil {
			return "", fmt.Errorf("node %d address %q: %v", id, n.Address, err)
		}
		h, ok := ipHost[ip]
		if !ok {
			return "", fmt.Errorf("node %d address %s is on no host of the network", id, n.Address)
		}
		return h, nil
	}
}

// replicaDivergence dumps the chunk metadata of every target of every
// chain and returns, per chain, where a replica differs from the chain's
// head (a chunk missing, or another committed version, length or
// checksum). Call it with no writes in flight.
func replicaDivergence(ctx context.Context, r *routing.Routing) ([]string, error) {
	var bad []string
	for _, ch := range r.Info.Chains {
		var ref map[string]string
		var refTarget uint64
		for _, ct := range ch.Targets {
			if ct.PublicState != mgmtdpb.PublicState_PUBLIC_SERVING {
				return nil, fmt.Errorf("chain %d target %d is %v, not serving", ch.ChainId, ct.TargetId, ct.PublicState)
			}
			chunks, err := dumpChunks(ctx, r, ct.TargetId)
			if err != nil {
				return nil, err
			}
			if ref == nil {
				ref, refTarget = chunks, ct.TargetId
				continue
			}
			if d := diff(ref, chunks); d != "" {
				bad = append(bad, fmt.Sprintf("chain %d: target %d vs %d: %s", ch.ChainId, ct.TargetId, refTarget, d))
			}
		}
	}
	return bad, nil
}

// dumpChunks returns a target's committed chunks: "inode/index" ->
// "version length checksum".
func dumpChunks(ctx context.Context, r *routing.Routing, target uint64) (map[string]string, error) {
	addr, _, err := r.TargetAddress(target)
	if err != nil {
		return nil, err
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), rpcauth.DialOption(token))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	stream, err := storagepb.NewStorageClient(cc).DumpChunkMeta(ctx, &storagepb.DumpChunkMetaReq{TargetId: target})
	if err != nil {
		return nil, fmt.Errorf("dump target %d at %s: %w", target, addr, err)
	}
	out := map[string]string{}
	for {
		b, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("dump target %d at %s: %w", target, addr, err)
		}
		for _, m := range b.Chunks {
			if m.Version == 0 {
				continue // only a pending create: never acknowledged
			}
			out[fmt.Sprintf("%d/%d", m.Inode, m.Index)] = fmt.Sprintf("v%d len %d crc %08x", m.Version, m.Length, m.Checksum)
		}
	}
}

func diff(want, got map[string]string) string {
	var d []string
	for k, v := range want {
		if g, ok := got[k]; !ok {
			d = append(d, k+" missing")
		} else if g != v {
			d = append(d, fmt.Sprintf("%s %s, head has %s", k, g, v))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			d = append(d, k+" extra")
		}
	}
	sort.Strings(d)
	if len(d) > 5 {
		d = append(d[:5], fmt.Sprintf("... %d more", len(d)-5))
	}
	return strings.Join(d, "; ")
}

// probeAnswer is one answer a probe got from one mgmtd.
type probeAnswer struct {
	start, end       int64 // unixnano around the call
	primary, standby bool  // neither: the call failed
}

// splitBrain looks for proof of two primaries at once in the probes'
// answers: mgmtd B answered as primary, then A, then B again, with no
// answer from B in between other than primary. A lease can move from B to
// A and back, but B would answer standby (or fail) while A held it, and B
// is probed every 50 ms while a lease lasts 2 s.
func splitBrain(answers [][]probeAnswer) string {
	for b := range answers {
		for i := 0; i < len(answers[b]); i++ {
			b1 := answers[b][i]
			if !b1.primary {
				continue
			}
			// The next answer of B, if it is primary too.
			if i+1 >= len(answers[b]) || !answers[b][i+1].primary {
				continue
			}
			b2 := answers[b][i+1]
			for a := range answers {
				if a == b {
					continue
				}
				for _, x := range answers[a] {
					if x.primary && x.start > b1.end && x.end < b2.start {
						return fmt.Sprintf("mgmtd%d answered as primary at %d-%d, between mgmtd%d's primary answers ending %d and starting %d",
							a+1, x.start, x.end, b+1, b1.end, b2.start)
					}
				}
			}
		}
	}
	return ""
}
