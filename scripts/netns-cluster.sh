#!/usr/bin/env bash
# A multi-host EmberFS cluster on one machine: every "host" is a Linux
# network namespace with one veth link to a bridge, running its own
# processes with its own data directory. Needs root and iproute2.
#
# Whole cluster (3 control hosts running an etcd member, mgmtd and meta
# each; storage hosts; client hosts):
#   scripts/netns-cluster.sh up [--storage N] [--clients N] DIR
#   scripts/netns-cluster.sh down DIR
# `up` builds bin/emberfs into DIR, starts everything in the background and
# prints how to run a client; `down` kills what `up` started and removes
# the namespaces and the bridge.
#
# Network plumbing only (the Go harness, internal/netns, uses these, so the
# commands live in one place):
#   scripts/netns-cluster.sh net-up OWNER_PID HOST...   prints "RUN SUBNET" then "HOST NS IP" lines
#   scripts/netns-cluster.sh net-down RUN
#   scripts/netns-cluster.sh link RUN HOST down|up    cut or restore a host's link (partition)
#   scripts/netns-cluster.sh shape RUN HOST [QDISC ARGS]  a tc qdisc on the host's egress, e.g.
#        "tbf rate 200mbit burst 256kb latency 50ms" or "netem delay 5ms" (no args: remove)
#   scripts/netns-cluster.sh sweep                    remove runs whose owner process is gone
#
# Names: run id RUN (6 hex digits), bridge efb-RUN, namespaces efs-RUN-HOST,
# root-side veths eRUN-N. Each run has a /24 of its own in 10.200-254.x.0
# (checked against the routes in use); hosts get .1, .2, ..., the bridge
# (the root namespace, where tests observe from) .254. A run is recorded in
# /run/emberfs-netns/RUN with its owner's pid: net-up first sweeps runs whose
# owner died without cleaning up (a test binary killed by a timeout), so
# stale namespaces never pile up on a shared machine; a run made by `up` has
# no owner pid and stays until `down`.
set -euo pipefail
shopt -s inherit_errexit
state=/run/emberfs-netns
here="$(cd "$(dirname "$0")" && pwd)"

die() { echo "netns-cluster: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "needs root (ip netns, veth, bridge)"; }

# run_file RUN: the record of a run; fails if there is none.
run_file() {
  [[ "$1" =~ ^[0-9a-f]{6}$ ]] || die "bad run id '$1' (want 6 hex digits)"
  [ -f "$state/$1" ] || die "no run $1 (no $state/$1)"
  echo "$state/$1"
}

# host_field RUN HOST FIELD: FIELD 3 = namespace, 4 = ip, 5 = root veth.
host_field() {
  local f; f=$(run_file "$1")
  awk -v h="$2" -v k="$3" '$1=="host" && $2==h {print $k; found=1} END {exit !found}' "$f" ||
    die "run $1 has no host '$2'"
}

net_down() {
  local run=$1 f; f=$(run_file "$run")
  local ns
  for ns in $(awk '$1=="host" {print $3}' "$f"); do
    # Deleting a namespace deletes its veth end and with it the peer.
    ip netns del "$ns" 2>/dev/null || true
  done
  ip link del "efb-$run" 2>/dev/null || true
  rm -f "$f"
}

sweep() {
  mkdir -p "$state"
  local f run pid
  for f in "$state"/*; do
    [ -f "$f" ] || continue
    run=$(basename "$f")
    pid=$(awk '$1=="owner" {print $2}' "$f")
    if [ -n "$pid" ] && [ "$pid" != 0 ] && ! kill -0 "$pid" 2>/dev/null; then
      echo "netns-cluster: removing run $run (owner $pid is gone)" >&2
      net_down "$run"
    fi
  done
}

net_up() {
  need_root
  local owner=$1; shift
  [ $# -ge 1 ] || die "net-up: no hosts named"
  [ $# -le 250 ] || die "net-up: at most 250 hosts"
  mkdir -p "$state"
  exec 9>"$state.lock"
  flock 9
  sweep
  local run subnet="" try a b
  run=$(head -c3 /dev/urandom | od -An -tx1 | tr -d ' \n')
  for try in $(seq 1 50); do
    a=$((200 + RANDOM % 55)) b=$((RANDOM % 256))
    # Free if no route of the root namespace and no other run uses it.
    if ! ip -4 route show | grep -q "^10\.$a\.$b\." && ! grep -qs "^subnet 10\.$a\.$b\." "$state"/*; then
      subnet="10.$a.$b"
      break
    fi
  done
  [ -n "$subnet" ] || die "net-up: no free 10.x.y.0/24 found"
  local f="$state/$run"
  { echo "owner $owner"; echo "subnet $subnet.0/24"; } >"$f"
  # From here on a failure removes what was made.
  trap 'net_down '"$run"' >/dev/null 2>&1' ERR
  ip link add "efb-$run" type bridge
  ip addr add "$subnet.254/24" dev "efb-$run"
  ip link set "efb-$run" up
  echo "$run $subnet.0/24"
  local i=0 h ns veth
  for h in "$@"; do
    i=$((i + 1))
    [[ "$h" =~ ^[a-z0-9]{1,20}$ ]] || die "net-up: bad host name '$h' (lower-case letters and digits)"
    ns="efs-$run-$h" veth="e$run-$i"
    echo "host $h $ns $subnet.$i $veth" >>"$f"
    ip netns add "$ns"
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    ip link set "$veth" master "efb-$run" up
    ip -n "$ns" addr add "$subnet.$i/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    echo "$h $ns $subnet.$i"
  done
  trap - ERR
}

link() {
  need_root
  local veth; veth=$(host_field "$1" "$2" 5)
  case "${3:-}" in
    # The bridge-side end goes down: the host's own eth0 stays up with no
    # carrier, so it keeps reaching its own address (a real unplugged
    # cable), while nothing crosses to or from the other hosts.
    down | up) ip link set "$veth" "$3" ;;
    *) die "link: want down or up, not '${3:-}'" ;;
  esac
  if [ "$3" = up ]; then
    # The kernel reports the carrier back with a delay (up to a second
    # under load): return once the host's end has it, so that "healed"
    # means traffic flows.
    local ns i; ns=$(host_field "$1" "$2" 3)
    for i in $(seq 1 100); do
      ip -n "$ns" link show eth0 | grep -q LOWER_UP && return 0
      sleep 0.1
    done
    die "link: $2's eth0 has no carrier 10 s after its link came up"
  fi
}

shape() {
  need_root
  local ns; ns=$(host_field "$1" "$2" 3)
  shift 2
  if [ $# -eq 0 ]; then
    ip netns exec "$ns" tc qdisc del dev eth0 root 2>/dev/null || true
  elif ! ip netns exec "$ns" tc qdisc replace dev eth0 root "$@"; then
    # e.g. netem on a kernel built without sch_netem (this project's VMs).
    die "shape: tc qdisc $* failed on $2 (is the qdisc's kernel module there?)"
  fi
}

# ---- the whole cluster, for manual use ----

cluster_up() {
  need_root
  local storage=6 clients=1
  while [ $# -gt 1 ]; do
    case "$1" in
      --storage) storage=$2; shift 2 ;;
      --clients) clients=$2; shift 2 ;;
      *) die "up: unknown option $1" ;;
    esac
  done
  [ $# -eq 1 ] || die "usage: up [--storage N] [--clients N] DIR"
  local dir; dir=$(mkdir -p "$1" && cd "$1" && pwd)
  [ ! -e "$dir/cluster.env" ] || die "$dir already holds a cluster (down it first)"
  [ "$storage" -ge 3 ] || die "--storage must be at least 3 (chains of 3 replicas on distinct hosts)"
  (cd "$here/.." && go build -o "$dir/emberfs" ./cmd/emberfs)
  local hosts=(ctl1 ctl2 ctl3) i
  for i in $(seq 1 "$storage"); do hosts+=("st$i"); done
  for i in $(seq 1 "$clients"); do hosts+=("cl$i"); done
  local out run
  out=$(net_up 0 "${hosts[@]}")
  run=$(echo "$out" | head -1 | cut -d' ' -f1)
  declare -A ip ns
  local h n a
  while read -r h n a; do ns[$h]=$n ip[$h]=$a; done < <(echo "$out" | tail -n +2)
  local token; token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  # The storage services' peer token: proves the storage role on chain
  # traffic, so only the storage configs get it (never cluster.env).
  local peer_token; peer_token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  {
    echo "RUN=$run"
    echo "EMBERFS_TOKEN=$token"
    echo "EMBERFS_MGMTD=${ip[ctl1]}:7100,${ip[ctl2]}:7100,${ip[ctl3]}:7100"
  } >"$dir/cluster.env"
  : >"$dir/pids"
  # bg HOST NAME CMD...: runs CMD in HOST's namespace, logging to DIR/NAME.log.
  bg() {
    local host=$1 name=$2; shift 2
    setsid ip netns exec "${ns[$host]}" env EMBERFS_TOKEN="$token" "$@" >"$dir/$name.log" 2>&1 </dev/null &
    echo "$! $name" >>"$dir/pids"
  }
  local initial="e1=http://${ip[ctl1]}:2380,e2=http://${ip[ctl2]}:2380,e3=http://${ip[ctl3]}:2380"
  local etcd_eps="${ip[ctl1]}:2379,${ip[ctl2]}:2379,${ip[ctl3]}:2379"
  for i in 1 2 3; do
    bg "ctl$i" "etcd$i" "$here/etcd-member.sh" "e$i" "$dir/ctl$i/etcd" "http://${ip[ctl$i]}:2379" \
      "http://${ip[ctl$i]}:2380" "$initial"
  done
  for i in 1 2 3; do
    mkdir -p "$dir/ctl$i"
    cat >"$dir/ctl$i/mgmtd.toml" <<EOF
listen = "${ip[ctl$i]}:7100"
metrics_listen = "${ip[ctl$i]}:7190"
kv = "etcd:$etcd_eps/mgmtd"
instance_id = "mgmtd$i"
EOF
    bg "ctl$i" "mgmtd$i" "$dir/emberfs" mgmtd --config "$dir/ctl$i/mgmtd.toml"
  done
  for i in $(seq 1 "$storage"); do
    mkdir -p "$dir/st$i"
    cat >"$dir/st$i/storage.toml" <<EOF
node_id = $i
targets = ["$dir/st$i/t0", "$dir/st$i/t1"]
mgmtd = ["${ip[ctl1]}:7100", "${ip[ctl2]}:7100", "${ip[ctl3]}:7100"]
listen = "${ip[st$i]}:7300"
data_listen = "${ip[st$i]}:7310"
metrics_listen = "${ip[st$i]}:7390"
peer_token = "$peer_token"
EOF
    bg "st$i" "storage$i" "$dir/emberfs" storage --config "$dir/st$i/storage.toml"
  done
  local mg; mg=$(grep EMBERFS_MGMTD "$dir/cluster.env" | cut -d= -f2)
  local admin=(ip netns exec "${ns[ctl1]}" env EMBERFS_TOKEN="$token" "$dir/emberfs" admin --mgmtd "$mg")
  echo "waiting for $((storage * 2)) storage targets to register..." >&2
  # list-targets prints a header and one line per target.
  for i in $(seq 1 120); do
    [ "$("${admin[@]}" list-targets 2>/dev/null | tail -n +2 | grep -c .)" -ge $((storage * 2)) ] && break
    [ "$i" -lt 120 ] || die "the storage targets did not all register in 120 s (see $dir/storage*.log)"
    sleep 1
  done
  "${admin[@]}" create-chain-table --table 1 --replicas 3 >&2
  for i in 1 2 3; do
    cat >"$dir/ctl$i/meta.toml" <<EOF
listen = "${ip[ctl$i]}:7200"
metrics_listen = "${ip[ctl$i]}:7290"
kv = "etcd:$etcd_eps/meta"
mgmtd = ["${ip[ctl1]}:7100", "${ip[ctl2]}:7100", "${ip[ctl3]}:7100"]
root_chain_table = 1
root_stripe_size = $((storage * 2 / 3))
EOF
    bg "ctl$i" "meta$i" "$dir/emberfs" meta --config "$dir/ctl$i/meta.toml"
  done
  cat <<EOF
cluster $run up in $dir (logs: $dir/*.log; settings: $dir/cluster.env)
hosts: $(for h in "${hosts[@]}"; do printf '%s=%s ' "$h" "${ip[$h]}"; done)
a client on cl1:
  . $dir/cluster.env; export EMBERFS_TOKEN EMBERFS_MGMTD
  ip netns exec ${ns[cl1]} $dir/emberfs status
  ip netns exec ${ns[cl1]} $dir/emberfs cp /etc/hosts emberfs:/hosts
cut st1 off:  $0 link $run st1 down    (and up)
stop it all:  $0 down $dir
EOF
}

cluster_down() {
  need_root
  [ $# -eq 1 ] || die "usage: down DIR"
  local dir=$1
  [ -f "$dir/cluster.env" ] || die "$dir holds no cluster (no cluster.env)"
  local pid name
  while read -r pid name; do
    kill -KILL "$pid" 2>/dev/null && echo "killed $name ($pid)" >&2 || true
  done <"$dir/pids"
  local run; run=$(grep '^RUN=' "$dir/cluster.env" | cut -d= -f2)
  [ -f "$state/$run" ] && net_down "$run"
  rm -f "$dir/cluster.env" "$dir/pids"
  echo "cluster $run down; data left in $dir" >&2
}

cmd=${1:-}
[ -n "$cmd" ] || { sed -n '2,30p' "$0" >&2; exit 2; }
shift
case "$cmd" in
  net-up) [ $# -ge 2 ] || die "usage: net-up OWNER_PID HOST..."; net_up "$@" ;;
  net-down) [ $# -eq 1 ] || die "usage: net-down RUN"; need_root; exec 9>"$state.lock"; flock 9; net_down "$1" ;;
  link) [ $# -eq 3 ] || die "usage: link RUN HOST down|up"; link "$@" ;;
  shape) [ $# -ge 2 ] || die "usage: shape RUN HOST [qdisc args]"; shape "$@" ;;
  sweep) need_root; exec 9>"$state.lock"; flock 9; sweep ;;
  up) cluster_up "$@" ;;
  down) cluster_down "$@" ;;
  *) die "unknown command '$cmd' (net-up, net-down, link, shape, sweep, up, down)" ;;
esac
