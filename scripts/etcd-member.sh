#!/usr/bin/env bash
# Runs one etcd member with the settings EmberFS's etcd engine expects
# (service/kv/etcdkv, docs/kv.md), building the server first if needed
# (scripts/build-etcd.sh, cached). The test harness (internal/etcdcluster)
# and the multi-host scripts start members through this script, so the
# flags live in one place. The script execs etcd: its pid is etcd's.
#
#   scripts/etcd-member.sh NAME DATA_DIR CLIENT_URL PEER_URL INITIAL_CLUSTER [new|existing]
#
#   e.g. scripts/etcd-member.sh e1 /var/lib/emberfs/etcd1 http://10.0.0.1:2379 \
#          http://10.0.0.1:2380 e1=http://10.0.0.1:2380,e2=http://10.0.0.2:2380,e3=http://10.0.0.3:2380
#
# Limits: --max-txn-ops and --max-request-bytes are raised to what the
# engine assumes (etcdkv.DefaultMaxTxnOps, DefaultMaxRequestBytes), since
# etcd's defaults (128 operations, 1.5 MiB) are below one EmberFS
# transaction (kv.MaxTxnBytes, 10 MB). Old revisions are compacted after
# an hour (transactions read at a revision for at most 10 s). Extra etcd
# flags may follow in ETCD_EXTRA_FLAGS.
set -euo pipefail
if [ $# -lt 5 ]; then
  sed -n '2,20p' "$0" >&2
  exit 2
fi
name=$1 dir=$2 client=$3 peer=$4 cluster=$5 state=${6:-new}
bin="$("$(dirname "$0")/build-etcd.sh")"
mkdir -p "$dir"
# shellcheck disable=SC2086
exec "$bin" \
  --name "$name" --data-dir "$dir" \
  --listen-client-urls "$client" --advertise-client-urls "$client" \
  --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
  --initial-cluster "$cluster" --initial-cluster-state "$state" \
  --initial-cluster-token emberfs \
  --max-txn-ops 65536 --max-request-bytes 33554432 \
  --auto-compaction-mode periodic --auto-compaction-retention 1h \
  --log-level warn ${ETCD_EXTRA_FLAGS:-}
