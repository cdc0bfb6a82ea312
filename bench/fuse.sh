#!/usr/bin/env bash
# FUSE benchmark: starts its own cluster with `emberfs up` (3 storage
# services, replication 3) mounted in a temp dir, then runs, on the mount
# and on local disk in the same run:
#   - fio 1 MiB sequential write and read, 4 KiB random read (direct I/O);
#   - mdtest-like create/stat/unlink ops/s (bench/mdtest);
#   - the read stall when a storage replica is SIGKILLed (bench/readstall).
# Prints a Markdown table. Needs root (FUSE), fio and Go.
#   bench/fuse.sh [--size 1G] [--runtime 10] [--threads 4] [--files 2000]
set -euo pipefail

SIZE=1G RUNTIME=10 THREADS=4 FILES=2000
while [ $# -gt 0 ]; do
  case "$1" in
    --size) SIZE=$2; shift 2 ;;
    --runtime) RUNTIME=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --files) FILES=$2; shift 2 ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
command -v fio >/dev/null || { echo "fio is not installed (apt-get install fio)" >&2; exit 1; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/emberfs-fusebench-XXXXXX)
MNT=$WORK/mnt LOCAL=$WORK/local BIN=$WORK/bin
mkdir -p "$MNT" "$LOCAL" "$BIN"
UP_PID=
cleanup() {
  set +e
  if [ -n "$UP_PID" ]; then kill -INT "$UP_PID" 2>/dev/null; wait "$UP_PID" 2>/dev/null; fi
  mountpoint -q "$MNT" && { "$BIN/emberfs" umount "$MNT" || umount -l "$MNT"; }
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "building..." >&2
(cd "$ROOT" && go build -o "$BIN/emberfs" ./cmd/emberfs && go build -o "$BIN/mdtest" ./bench/mdtest \
  && go build -o "$BIN/readstall" ./bench/readstall)

echo "starting the cluster (emberfs up) ..." >&2
"$BIN/emberfs" up --data "$WORK/data" --storage 3 --replicas 3 --mount "$MNT" >"$WORK/up.log" 2>&1 &
UP_PID=$!
for _ in $(seq 120); do mountpoint -q "$MNT" && break; sleep 0.5; done
mountpoint -q "$MNT" || { echo "the mount did not come up; emberfs up said:" >&2; cat "$WORK/up.log" >&2; exit 1; }

# fio on one directory: prints "write_MBps read_MBps randread_IOPS".
run_fio() {
  local dir=$1 out
  local common=(--directory="$dir" --size="$SIZE" --direct=1 --ioengine=psync --numjobs=1
                --group_reporting --output-format=terse --terse-version=3)
  out=$(fio --name=seqwrite --rw=write --bs=1M "${common[@]}")
  local w; w=$(echo "$out" | awk -F';' '{printf "%.0f", $48/1024}')
  out=$(fio --name=seqwrite --rw=read --bs=1M --time_based --runtime="$RUNTIME" "${common[@]}")
  local r; r=$(echo "$out" | awk -F';' '{printf "%.0f", $7/1024}')
  out=$(fio --name=seqwrite --rw=randread --bs=4k --time_based --runtime="$RUNTIME" "${common[@]}")
  local iops; iops=$(echo "$out" | awk -F';' '{print $8}')
  rm -f "$dir"/seqwrite*
  echo "$w $r $iops"
}

echo "fio on the mount and on local disk ($SIZE, ${RUNTIME}s per read test) ..." >&2
read -r MW MR MI < <(run_fio "$MNT")
read -r LW LR LI < <(run_fio "$LOCAL")

echo "mdtest ($THREADS threads x $FILES files) ..." >&2
MD_M=$("$BIN/mdtest" --dir "$MNT/mdtest" --threads "$THREADS" --files "$FILES" --label "EmberFS mount")
MD_L=$("$BIN/mdtest" --dir "$LOCAL/mdtest" --threads "$THREADS" --files "$FILES" --label "local disk")

echo "read stall while a storage replica is killed ..." >&2
STALL="not measured"
dd if=/dev/urandom of="$MNT/stall" bs=1M count=64 status=none
VICTIM=$(pgrep -P "$UP_PID" -f 'storage' | head -n1 || true)
if [ -n "$VICTIM" ]; then
  "$BIN/readstall" --file "$MNT/stall" --duration 12s --mark 3s >"$WORK/stall.txt" &
  RS=$!
  sleep 3; kill -KILL "$VICTIM"
  if wait "$RS"; then STALL="$(grep STALL_MS "$WORK/stall.txt" | cut -d= -f2) ms"; else STALL="reads failed: $(head -n1 "$WORK/stall.txt")"; fi
  cat "$WORK/stall.txt" >&2
else
  echo "emberfs up runs storage in-process (no child process to kill): stall not measured" >&2
fi

cat <<TABLE

| test | EmberFS mount | local disk |
|---|---|---|
| fio 1 MiB sequential write (MB/s) | $MW | $LW |
| fio 1 MiB sequential read (MB/s) | $MR | $LR |
| fio 4 KiB random read (IOPS) | $MI | $LI |

| mdtest | threads | create/s | stat/s | unlink/s |
|---|---|---|---|---|
$MD_M
$MD_L

Read stall after SIGKILL of one storage replica (worst 1 MiB O_DIRECT read): $STALL
TABLE
