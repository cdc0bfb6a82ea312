package mgmtd

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
)

// PublicStateName is the short name used in docs, logs and `emberfs status`.
func PublicStateName(s mgmtdpb.PublicState) string {
	switch s {
	case mgmtdpb.PublicState_PUBLIC_SERVING:
		return "serving"
	case mgmtdpb.PublicState_PUBLIC_SYNCING:
		return "syncing"
	case mgmtdpb.PublicState_PUBLIC_WAITING:
		return "waiting"
	case mgmtdpb.PublicState_PUBLIC_LASTSRV:
		return "lastsrv"
	case mgmtdpb.PublicState_PUBLIC_OFFLINE:
		return "offline"
	}
	return "-"
}

// LocalStateName is the short name of a local state.
func LocalStateName(s mgmtdpb.LocalState) string {
	switch s {
	case mgmtdpb.LocalState_LOCAL_UPTODATE:
		return "up-to-date"
	case mgmtdpb.LocalState_LOCAL_ONLINE:
		return "online"
	case mgmtdpb.LocalState_LOCAL_OFFLINE:
		return "offline"
	}
	return "-"
}

// NodeStatusName is the short name of a node status.
func NodeStatusName(s mgmtdpb.NodeStatus) string {
	switch s {
	case mgmtdpb.NodeStatus_NODE_ACTIVE:
		return "active"
	case mgmtdpb.NodeStatus_NODE_FAILED:
		return "failed"
	case mgmtdpb.NodeStatus_NODE_DISABLED:
		return "disabled"
	}
	return "-"
}

// RoleName is the short name of a node role.
func RoleName(r mgmtdpb.NodeRole) string {
	switch r {
	case mgmtdpb.NodeRole_ROLE_STORAGE:
		return "storage"
	case mgmtdpb.NodeRole_ROLE_META:
		return "meta"
	case mgmtdpb.NodeRole_ROLE_CLIENT:
		return "client"
	}
	return "-"
}

// ParseRole parses "storage", "meta" or "client".
func ParseRole(s string) (mgmtdpb.NodeRole, error) {
	switch strings.ToLower(s) {
	case "storage":
		return mgmtdpb.NodeRole_ROLE_STORAGE, nil
	case "meta":
		return mgmtdpb.NodeRole_ROLE_META, nil
	case "client":
		return mgmtdpb.NodeRole_ROLE_CLIENT, nil
	}
	return 0, fmt.Errorf("unknown node role %q (want storage, meta or client)", s)
}

func formatUint(v uint64) string { return strconv.FormatUint(v, 10) }
