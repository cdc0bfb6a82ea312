package mgmtd

import (
	"fmt"
	"strconv"
	"strings"

	pb "github.com/emberfs/emberfs/service/proto"
)

// PublicStateName is the short name used in docs, logs and `emberfs status`.
func PublicStateName(s pb.MgmtdPublicState) string {
	switch s {
	case pb.MgmtdPublicState_MGMTD_PUBLIC_SERVING:
		return "serving"
	case pb.MgmtdPublicState_MGMTD_PUBLIC_SYNCING:
		return "syncing"
	case pb.MgmtdPublicState_MGMTD_PUBLIC_WAITING:
		return "waiting"
	case pb.MgmtdPublicState_MGMTD_PUBLIC_LASTSRV:
		return "lastsrv"
	case pb.MgmtdPublicState_MGMTD_PUBLIC_OFFLINE:
		return "offline"
	}
	return "-"
}

// LocalStateName is the short name of a local state.
func LocalStateName(s pb.MgmtdLocalState) string {
	switch s {
	case pb.MgmtdLocalState_MGMTD_LOCAL_UPTODATE:
		return "up-to-date"
	case pb.MgmtdLocalState_MGMTD_LOCAL_ONLINE:
		return "online"
	case pb.MgmtdLocalState_MGMTD_LOCAL_OFFLINE:
		return "offline"
	}
	return "-"
}

// NodeStatusName is the short name of a node status.
func NodeStatusName(s pb.MgmtdNodeStatus) string {
	switch s {
	case pb.MgmtdNodeStatus_MGMTD_NODE_ACTIVE:
		return "active"
	case pb.MgmtdNodeStatus_MGMTD_NODE_FAILED:
		return "failed"
	case pb.MgmtdNodeStatus_MGMTD_NODE_DISABLED:
		return "disabled"
	}
	return "-"
}

// RoleName is the short name of a node role.
func RoleName(r pb.MgmtdNodeRole) string {
	switch r {
	case pb.MgmtdNodeRole_MGMTD_ROLE_STORAGE:
		return "storage"
	case pb.MgmtdNodeRole_MGMTD_ROLE_META:
		return "meta"
	case pb.MgmtdNodeRole_MGMTD_ROLE_CLIENT:
		return "client"
	}
	return "-"
}

// ParseRole parses "storage", "meta" or "client".
func ParseRole(s string) (pb.MgmtdNodeRole, error) {
	switch strings.ToLower(s) {
	case "storage":
		return pb.MgmtdNodeRole_MGMTD_ROLE_STORAGE, nil
	case "meta":
		return pb.MgmtdNodeRole_MGMTD_ROLE_META, nil
	case "client":
		return pb.MgmtdNodeRole_MGMTD_ROLE_CLIENT, nil
	}
	return 0, fmt.Errorf("unknown node role %q (want storage, meta or client)", s)
}

func formatUint(v uint64) string { return strconv.FormatUint(v, 10) }
