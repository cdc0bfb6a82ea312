#!/usr/bin/env bash
# FUSE benchmark. Starts its own cluster as separate processes on loopback
# (mgmtd, meta, 3 storage services with 2 targets each, replication 3; the
# storage services keep default durability: fsync on every chunk write),
# mounts it with `emberfs mount` in a temp dir, then runs, on the mount and
# on local disk (the temp dir's file system, which also holds the storage
# targets) in the same run:
#   - fio 1 MiB sequential write and read, 4 KiB random read (direct I/O);
#   - mdtest-like create/stat/unlink ops/s (bench/mdtest);
#   - the read stall when a storage replica is SIGKILLed (bench/readstall).
# For each fio test it also reports the CPU-seconds per GB moved of the
# mount process (the client) and of the storage services together, and
# their peak RSS (VmHWM).
# Prints a Markdown table on stdout (progress on stderr). Needs root (FUSE),
# fio and Go. Settings come from the environment [defaults]:
#   SIZE [256M]      fio file size
#   RUNTIME [20]     seconds per fio read test
#   THREADS [4], FILES [1000]   mdtest workers and files per worker
#   STALL_MB [64], STALL_SECS [12]   readstall file size and duration (the
#                    replica is killed 3 s in)
#   HEARTBEAT [100ms], FAILURE [1s]  mgmtd heartbeat interval and node
#                    failure timeout (the stall depends on them)
#   REPLICAS [3]     chain length (1 or 3)
#   MOUNT_ARGS [unset]   extra `emberfs mount` flags (e.g. --write-inflight 16)
#   BUFFERED_IO [unset]  set to write chunk data through the page cache
#                    only (storage buffered_io = true) instead of O_DIRECT
#   PARTS [fio mdtest lsdir stall; no stall at REPLICAS=1]  which tests to run; "lsdir" creates
#                    LS_FILES [20000] files in one directory with LS_THREADS [8]
#                    workers, drops the kernel caches and times `ls -l` of it
#   KEEP [unset]     set to keep the work directory (logs) afterwards
set -euo pipefail

SIZE=${SIZE:-256M} RUNTIME=${RUNTIME:-20} THREADS=${THREADS:-4} FILES=${FILES:-1000}
STALL_MB=${STALL_MB:-64} STALL_SECS=${STALL_SECS:-12} HEARTBEAT=${HEARTBEAT:-100ms} FAILURE=${FAILURE:-1s}
REPLICAS=${REPLICAS:-3}
BUFFERED=false; [ -z "${BUFFERED_IO:-}" ] || BUFFERED=true
if [ "$REPLICAS" -gt 1 ]; then PARTS=${PARTS:-fio mdtest lsdir stall}; else PARTS=${PARTS:-fio mdtest lsdir}; fi
LS_FILES=${LS_FILES:-20000} LS_THREADS=${LS_THREADS:-8}
part() { [[ " $PARTS " == *" $1 "* ]]; }
[ $# -eq 0 ] || { echo "bench/fuse.sh takes no arguments; set SIZE, RUNTIME, THREADS, FILES, ... (see its header)" >&2; exit 2; }
command -v fio >/dev/null || { echo "fio is not installed (apt-get install fio)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "bench/fuse.sh needs root (FUSE mount)" >&2; exit 1; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/emberfs-fusebench-XXXXXX)
MNT=$WORK/mnt LOCAL=$WORK/local BIN=$WORK/bin
mkdir -p "$MNT" "$LOCAL" "$BIN"
export EMBERFS_TOKEN=fusebench-$RANDOM$RANDOM$RANDOM
# The storage services' own secret (peer_token); only their configs get it.
PEER_TOKEN=fusebench-peer-$RANDOM$RANDOM$RANDOM
PIDS=() MOUNT_PID=
declare -A STORAGE_PID
cleanup() {
  set +e
  if [ -n "$MOUNT_PID" ]; then kill -TERM "$MOUNT_PID" 2>/dev/null; wait "$MOUNT_PID" 2>/dev/null; fi
  mountpoint -q "$MNT" && umount -l "$MNT"
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  if [ -n "${KEEP:-}" ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

COMMIT=$(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet HEAD -- . 2>/dev/null || echo +changes)
echo "building..." >&2
(cd "$ROOT" && go build -o "$BIN/emberfs" ./cmd/emberfs && go build -o "$BIN/mdtest" ./bench/mdtest \
  && go build -o "$BIN/readstall" ./bench/readstall)
E=$BIN/emberfs

# waitlog FILE REGEX: prints the regex's first group once FILE has a match.
waitlog() {
  local v
  for _ in $(seq 600); do
    v=$(sed -nE "s/.*$2.*/\1/p" "$1" | head -n1)
    if [ -n "$v" ]; then echo "$v"; return; fi
    sleep 0.1
  done
  echo "no match for '$2' in $1:" >&2; cat "$1" >&2; exit 1
}

start_storage() {
  "$E" storage --config "$WORK/storage$1.toml" >>"$WORK/storage$1.log" 2>&1 &
  STORAGE_PID[$1]=$!; PIDS+=($!)
}

echo "starting mgmtd, 3 storage services and meta as separate processes..." >&2
printf '%s\n' 'listen = "127.0.0.1:0"' 'metrics_listen = ""' "kv = \"badger:$WORK/mgmtd\"" \
  "heartbeat_interval = \"$HEARTBEAT\"" "node_failure_timeout = \"$FAILURE\"" >"$WORK/mgmtd.toml"
"$E" mgmtd --config "$WORK/mgmtd.toml" >"$WORK/mgmtd.log" 2>&1 & PIDS+=($!)
MGMTD=$(waitlog "$WORK/mgmtd.log" 'listening on ([^ ]+)')
export EMBERFS_MGMTD=$MGMTD
for n in 1 2 3; do
  printf '%s\n' "node_id = $n" "targets = [\"$WORK/store$n/disk0\", \"$WORK/store$n/disk1\"]" \
    "mgmtd = [\"$MGMTD\"]" 'listen = "127.0.0.1:0"' 'data_listen = "127.0.0.1:0"' 'metrics_listen = ""' \
    'no_sync = false' "buffered_io = $BUFFERED" "peer_token = \"$PEER_TOKEN\"" >"$WORK/storage$n.toml"
  start_storage $n
done
for _ in $(seq 600); do [ "$("$E" admin list-targets 2>/dev/null | grep -c online)" = 6 ] && break; sleep 0.1; done
"$E" admin create-chain-table --table 1 --replicas "$REPLICAS" >&2
printf '%s\n' 'listen = "127.0.0.1:0"' 'metrics_listen = ""' "kv = \"badger:$WORK/meta\"" "mgmtd = [\"$MGMTD\"]" \
  'root_chain_table = 1' 'root_stripe_size = 2' >"$WORK/meta.toml"
"$E" meta --config "$WORK/meta.toml" >"$WORK/meta.log" 2>&1 & PIDS+=($!)
waitlog "$WORK/meta.log" 'meta listening on ([^ ]+)' >/dev/null
# shellcheck disable=SC2086 # MOUNT_ARGS is a list of flags
"$E" mount ${MOUNT_ARGS:-} "$MNT" >"$WORK/mount.log" 2>&1 & MOUNT_PID=$!
for _ in $(seq 600); do mountpoint -q "$MNT" && break; sleep 0.1; done
mountpoint -q "$MNT" || { echo "the mount did not come up:" >&2; cat "$WORK/mount.log" >&2; exit 1; }

# cpu PID...: user+system CPU seconds of the processes so far.
cpu() {
  local tck t=0 p
  tck=$(getconf CLK_TCK)
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  awk -v t="$t" -v k="$tck" 'BEGIN {printf "%.2f", t / k}'
}
# hwm PID...: summed peak RSS (VmHWM) in MiB.
hwm() {
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '/^VmHWM/ {print $2}' "/proc/$p/status"))); done
  echo $((t / 1024))
}
# perGB SECONDS KB: CPU-seconds per GB moved.
perGB() { awk -v s="$1" -v kb="$2" 'BEGIN {if (kb > 0) printf "%.2f", s / (kb * 1024 / 1e9); else print "-"}'; }

# fio1 DIR NAME ARGS...: one fio test; prints fio's terse line followed by
# ";client;servers" CPU-seconds per GB on the mount (";-;-" elsewhere).
fio1() {
  local dir=$1 name=$2 out c0 s0 c1 s1 kb
  shift 2
  local common=(--directory="$dir" --filename=fio.data --size="$SIZE" --direct=1 --ioengine=psync --numjobs=1
                --group_reporting --output-format=terse --terse-version=3)
  if [ "$dir" = "$MNT" ]; then c0=$(cpu "$MOUNT_PID"); s0=$(cpu "${STORAGE_PID[@]}"); fi
  out=$(fio --name="$name" "$@" "${common[@]}")
  kb=$(echo "$out" | awk -F';' '{print $6 + $47}') # read + write KiB moved
  if [ "$dir" = "$MNT" ]; then
    c1=$(cpu "$MOUNT_PID"); s1=$(cpu "${STORAGE_PID[@]}")
    echo "$out;$(perGB "$(awk -v a="$c0" -v b="$c1" 'BEGIN{print b-a}')" "$kb");$(perGB "$(awk -v a="$s0" -v b="$s1" 'BEGIN{print b-a}')" "$kb")"
  else
    echo "$out;-;-"
  fi
}

# fio on one directory: prints "write_MiBps read_MiBps randread_IOPS" and
# the client and server CPU-seconds per GB of each test (terse v3 fields:
# 6 read KiB, 7 read KiB/s, 8 read IOPS, 47 write KiB, 48 write KiB/s).
run_fio() {
  local dir=$1 out w r iops wc ws rc rs ic is
  out=$(fio1 "$dir" seqwrite --rw=write --bs=1M)
  w=$(echo "$out" | awk -F';' '{printf "%.0f", $48/1024}'); wc=$(echo "$out" | awk -F';' '{print $(NF-1)}'); ws=$(echo "$out" | awk -F';' '{print $NF}')
  out=$(fio1 "$dir" seqread --rw=read --bs=1M --time_based --runtime="$RUNTIME")
  r=$(echo "$out" | awk -F';' '{printf "%.0f", $7/1024}'); rc=$(echo "$out" | awk -F';' '{print $(NF-1)}'); rs=$(echo "$out" | awk -F';' '{print $NF}')
  out=$(fio1 "$dir" randread --rw=randread --bs=4k --time_based --runtime="$RUNTIME")
  iops=$(echo "$out" | awk -F';' '{print $8}'); ic=$(echo "$out" | awk -F';' '{print $(NF-1)}'); is=$(echo "$out" | awk -F';' '{print $NF}')
  rm -f "$dir/fio.data"
  echo "$w $r $iops $wc $ws $rc $rs $ic $is"
}

MW=- MR=- MI=- LW=- LR=- LI=- MD_M= MD_L= LS_M= LS_L= STALL=-
MWC=- MWS=- MRC=- MRS=- MIC=- MIS=- RSS_CLIENT=- RSS_SERVERS=-
if part fio; then
  echo "fio on the mount and on local disk ($SIZE, ${RUNTIME}s per read test) ..." >&2
  read -r MW MR MI MWC MWS MRC MRS MIC MIS < <(run_fio "$MNT")
  # Peak RSS so far (before the stall test restarts a storage process).
  RSS_CLIENT=$(hwm "$MOUNT_PID") RSS_SERVERS=$(hwm "${STORAGE_PID[@]}")
  read -r LW LR LI _ < <(run_fio "$LOCAL")
fi

if part mdtest; then
  echo "mdtest ($THREADS threads x $FILES files) ..." >&2
  MD_M=$("$BIN/mdtest" --dir "$MNT/mdtest" --threads "$THREADS" --files "$FILES" --label "EmberFS mount")
  MD_L=$("$BIN/mdtest" --dir "$LOCAL/mdtest" --threads "$THREADS" --files "$FILES" --label "local disk")
fi

# lsdir DIR LABEL: creates LS_FILES files in one directory, then times a
# cold-cache `ls -l` of it; prints a table row.
lsdir() {
  local per=$((LS_FILES / LS_THREADS)) row t0 t1
  row=$("$BIN/mdtest" --dir "$1" --threads "$LS_THREADS" --files "$per" --shared --keep --label "$2")
  sync; echo 2 >/proc/sys/vm/drop_caches # forget dentries and inodes: a cold listing
  t0=$(date +%s.%N)
  [ "$(ls -l "$1/shared" | wc -l)" -gt "$((per * LS_THREADS))" ] || { echo "ls -l of $1/shared listed too few entries" >&2; exit 1; }
  t1=$(date +%s.%N)
  echo "| $2 | $LS_THREADS | $((per * LS_THREADS)) | $(echo "$row" | cut -d'|' -f4 | tr -d ' ') | $(awk "BEGIN{printf \"%.2f\", $t1-$t0}") |"
  rm -rf "$1"
}
if part lsdir; then
  echo "one directory of $LS_FILES files, $LS_THREADS threads, then ls -l ..." >&2
  LS_M=$(lsdir "$MNT/lsdir" "EmberFS mount")
  LS_L=$(lsdir "$LOCAL/lsdir" "local disk")
fi

if part stall; then
  echo "read stall while a storage replica is SIGKILLed ..." >&2
  dd if=/dev/urandom of="$MNT/stall" bs=1M count="$STALL_MB" status=none
  "$BIN/readstall" --file "$MNT/stall" --duration "${STALL_SECS}s" --mark 3s >"$WORK/stall.txt" &
  RS=$!
  sleep 3
  kill -KILL "${STORAGE_PID[2]}"
  if wait "$RS"; then STALL="$(grep STALL_MS "$WORK/stall.txt" | cut -d= -f2) ms"
  else STALL="reads failed: $(head -n1 "$WORK/stall.txt")"; fi
  cat "$WORK/stall.txt" >&2
  start_storage 2 # so the cluster shuts down whole
fi

cat <<TABLE

| test | EmberFS mount | local disk | client CPU s/GB | servers CPU s/GB |
|---|---|---|---|---|
| fio 1 MiB sequential write (MiB/s) | $MW | $LW | $MWC | $MWS |
| fio 1 MiB sequential read (MiB/s) | $MR | $LR | $MRC | $MRS |
| fio 4 KiB random read (IOPS) | $MI | $LI | $MIC | $MIS |

Peak RSS after the fio tests: client (mount process) $RSS_CLIENT MiB, storage services together $RSS_SERVERS MiB.

| mdtest | threads | create/s | stat/s | unlink/s |
|---|---|---|---|---|
$MD_M
$MD_L

| one directory | threads | files | create/s | cold \`ls -l\` (s) |
|---|---|---|---|---|
$LS_M
$LS_L

Read stall after SIGKILL of one of $REPLICAS storage replicas (worst 1 MiB O_DIRECT read; mgmtd heartbeat $HEARTBEAT, failure timeout $FAILURE): $STALL

Settings: replicas $REPLICAS; parts: $PARTS; fio $SIZE file, ${RUNTIME} s per read test, direct=1, psync, 1 job; mdtest $THREADS threads x $FILES files; storage with fsync on every chunk write (default durability), buffered_io = $BUFFERED; mount flags: ${MOUNT_ARGS:-none}; commit $COMMIT, $(date -u +%Y-%m-%dT%H:%MZ), load $(cut -d' ' -f1-3 /proc/loadavg).
TABLE
