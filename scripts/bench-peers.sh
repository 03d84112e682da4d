#!/usr/bin/env bash
# Peer benchmark (issue 13): the same workloads on gfs, SeaweedFS and HDFS,
# on this machine, in one run, printed as one table with ratios.
#
# Each system runs as real processes on loopback with three storage
# servers and three replicas of every byte, and runs alone: the previous
# system is stopped before the next starts (2 cores here).
#   gfs:       gfs-master + 3 gfs-chunkservers (replication 3, 64 MiB
#              chunks; a chunkserver fdatasyncs each write before acking
#              it; the master's log is fsynced per commit group;
#              --insecure: plaintext, as the peers here)
#   SeaweedFS: weed master (-defaultReplication=002) + 3 weed volume
#              servers + weed filer (no fsync of needle writes: its
#              default; the filer's leveldb store is not synced either)
#   HDFS:      NameNode + 3 DataNodes, replication 3 (scripts/peers/hdfs.sh;
#              the NameNode fsyncs its edit log, DataNodes do not fsync
#              block files: dfs.datanode.synconclose=false, the default)
# Workloads:
#   large write/read: one file of --size MiB from and back to local disk
#     (gfs put/get; curl to the filer; curl to WebHDFS, which redirects to
#     a DataNode), sha256 checked; disk baseline in the same run: cp + sync,
#     and cat after dropping the page cache.
#   creates, stats: --files empty files in one folder, then a stat of each,
#     by 8 concurrent clients with a connection each (client/examples/
#     peer_load.rs: gfs through its client library, the filer's PUT/HEAD,
#     WebHDFS CREATE/GETFILESTATUS).
#   small files: --small files of 4 KiB written, then read back and
#     compared, by 8 clients.
# HDFS is driven through WebHDFS (HTTP), not its native RPC client, and a
# WebHDFS write goes through a redirect; that costs it a round trip per
# create or open.
#
# SeaweedFS is built once from its Go module source (`go install` refuses
# the module: its go.mod has replace directives) and Hadoop's jars are
# fetched from Maven Central once, both into
# ${XDG_CACHE_HOME:-~/.cache}/gfs/peers, outside the clone.
#
# Usage: scripts/bench-peers.sh [--size MiB] [--files N] [--small N]
#                               [--no-hdfs] [--dir DIR] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."

SEAWEEDFS_MODULE=github.com/seaweedfs/seaweedfs
SEAWEEDFS_VERSION=v0.0.0-20261109003541-7506e5f91cd6

size_mib=256
files=20000
small=2000
hdfs=1
base="${TMPDIR:-/tmp}"
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size_mib="$2"; shift 2 ;;
    --files) files="$2"; shift 2 ;;
    --small) small="$2"; shift 2 ;;
    --no-hdfs) hdfs=0; shift ;;
    --dir) base="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

cache="${XDG_CACHE_HOME:-$HOME/.cache}/gfs"
peers="$cache/peers"
weed="$peers/bin/weed-$SEAWEEDFS_VERSION"
log() { printf '[bench-peers] %s\n' "$*" >&2; }

install_seaweedfs() {
  [ -x "$weed" ] && return 0
  command -v go >/dev/null || { echo "go is needed to build SeaweedFS" >&2; exit 1; }
  log "building SeaweedFS $SEAWEEDFS_VERSION from its module source (once)"
  export GOPATH="$peers/go" GOFLAGS=-modcacherw
  go mod download "$SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION"
  local src="$peers/seaweedfs-$SEAWEEDFS_VERSION"
  if [ ! -f "$src/go.mod" ]; then
    rm -rf "$src.tmp"
    cp -r "$GOPATH/pkg/mod/$SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION" "$src.tmp"
    chmod -R u+w "$src.tmp"
    mv "$src.tmp" "$src"
  fi
  mkdir -p "$peers/bin"
  (cd "$src" && go build -o "$weed.tmp" ./weed)
  mv "$weed.tmp" "$weed"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# A free port P whose P+10000 is free too (SeaweedFS serves gRPC there).
free_sw_port() {
  python3 - <<'PY'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()
while True:
    p = random.randint(20000, 50000)
    if free(p) and free(p + 10000):
        print(p)
        break
PY
}
now() { date +%s.%N; }
# MiB/s of $1 MiB over the seconds between $2 and $3.
rate() { python3 -c "print(f'{$1 / ($3 - $2):.1f}')"; }
# Polls a command until it succeeds (90 s); on a timeout shows the logs.
wait_ok() {
  local what="$1"; shift
  for _ in $(seq 1 900); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for $what; the logs end with:" >&2
  tail -n 5 "$dir"/*.log >&2
  exit 1
}

install_seaweedfs
if [ "$hdfs" = 1 ]; then
  # shellcheck source=scripts/peers/hdfs.sh
  . scripts/peers/hdfs.sh
  install_hdfs
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
cargo build --release --locked --bin gfs --bin gfs-master --bin gfs-chunkserver >&2
cargo build --release --locked -p gfs-client --example peer_load >&2
bin="$CARGO_TARGET_DIR/release"
load="$bin/examples/peer_load"

dir="$(mktemp -d "$base/gfs-bench-peers.XXXXXX")"
pids=()
# Stops every process started so far (one system at a time runs).
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}
cleanup() {
  stop_all
  if [ "$keep" = 0 ]; then rm -rf "$dir"; else echo "kept $dir" >&2; fi
}
trap cleanup EXIT
results="$dir/results"
# record SYSTEM WORKLOAD VALUE
record() { echo "$1 $2 $3" >>"$results"; log "$1 $2: $3"; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
# timed_large SYSTEM WRITE_CMD... -- READ_CMD...: runs both, records MiB/s
# and checks the bytes read back (the read command writes $dir/out).
timed_large() {
  local system="$1"; shift
  local write=() read=()
  while [ "$1" != -- ]; do write+=("$1"); shift; done
  shift; read=("$@")
  local t0 t1
  t0=$(now); "${write[@]}" >/dev/null; t1=$(now)
  record "$system" large_write "$(rate "$size_mib" "$t0" "$t1")"
  drop_caches
  t0=$(now); "${read[@]}" >/dev/null; t1=$(now)
  record "$system" large_read "$(rate "$size_mib" "$t0" "$t1")"
  [ "$(sha256sum <"$dir/out" | cut -d' ' -f1)" = "$sum_in" ] || { echo "$system read back other bytes" >&2; exit 1; }
  rm -f "$dir/out"
}
# metadata SYSTEM ADDR: creates and stats, then small files written and read.
metadata() {
  local system="$1" addr="$2" op n folder out
  for op in create stat write read; do
    case "$op" in create|stat) n="$files"; folder=/meta ;; *) n="$small"; folder=/small ;; esac
    out=$("$load" --system "$system" --addr "$addr" --op "$op" --dir "$folder" --files "$n" --size 4096)
    record "$system" "$op" "$(python3 -c 'import json,sys; print("%.0f" % json.loads(sys.argv[1])["ops_per_s"])' "$out")"
  done
}

log "input: $size_mib MiB of random bytes"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$dir/in"
sum_in="$(sha256sum <"$dir/in" | cut -d' ' -f1)"

# --- baseline: the same bytes copied on the same disk ------------------------
t0=$(now); cp "$dir/in" "$dir/copy"; sync; t1=$(now)
record disk large_write "$(rate "$size_mib" "$t0" "$t1")"
drop_caches
t0=$(now); cat "$dir/copy" >/dev/null; t1=$(now)
record disk large_read "$(rate "$size_mib" "$t0" "$t1")"
rm -f "$dir/copy"

# --- gfs ---------------------------------------------------------------------
gport=$(free_port)
gm="127.0.0.1:$gport"
"$bin/gfs-master" --insecure --superuser "$(id -un)" --listen "$gm" --data-dir "$dir/gfs/master" >"$dir/gfs-master.log" 2>&1 &
pids+=($!)
for i in 0 1 2; do
  "$bin/gfs-chunkserver" --insecure --master "$gm" --listen 127.0.0.1:0 --zone "z$i" \
    --data-dir "$dir/gfs/cs$i" >"$dir/gfs-cs$i.log" 2>&1 &
  pids+=($!)
done
live() { "$bin/gfs" --insecure --master "$gm" admin status --json |
  python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if sum(1 for x in s["servers"] if x["state"]=="live")==3 else 1)'; }
wait_ok "3 gfs chunkservers" live
# Warm-up (first connections, first chunk allocation), as for the peers.
echo warm | "$bin/gfs" --insecure --master "$gm" put - /warm >/dev/null
timed_large gfs "$bin/gfs" --insecure --master "$gm" put "$dir/in" /big \
  -- "$bin/gfs" --insecure --master "$gm" get /big "$dir/out"
metadata gfs "$gm"
stop_all

# --- SeaweedFS -----------------------------------------------------------------
mport=$(free_sw_port); fport=$(free_sw_port)
mkdir -p "$dir/sw/master" "$dir/sw/filer"
"$weed" master -ip=127.0.0.1 -port="$mport" -mdir="$dir/sw/master" -defaultReplication=002 \
  -volumeSizeLimitMB=1024 >"$dir/sw-master.log" 2>&1 &
pids+=($!)
for i in 0 1 2; do
  mkdir -p "$dir/sw/v$i"
  "$weed" volume -ip=127.0.0.1 -port="$(free_sw_port)" -dir="$dir/sw/v$i" -max=20 \
    -mserver="127.0.0.1:$mport" >"$dir/sw-volume$i.log" 2>&1 &
  pids+=($!)
done
"$weed" filer -ip=127.0.0.1 -port="$fport" -master="127.0.0.1:$mport" \
  -defaultReplicaPlacement=002 -defaultStoreDir="$dir/sw/filer" >"$dir/sw-filer.log" 2>&1 &
pids+=($!)
wait_ok "the SeaweedFS filer" curl -sf "http://127.0.0.1:$fport/"
# Warm-up: the first write makes the master grow volumes (seconds); retried
# until a write goes through, so the timed one finds them ready.
echo warm >"$dir/warm"
wait_ok "a first SeaweedFS write" curl -sf -o /dev/null -F "file=@$dir/warm" "http://127.0.0.1:$fport/bench/"
timed_large weed curl -sf -o /dev/null -F "file=@$dir/in" "http://127.0.0.1:$fport/bench/" \
  -- curl -sf -o "$dir/out" "http://127.0.0.1:$fport/bench/in"
metadata filer "127.0.0.1:$fport"
stop_all

# --- HDFS ----------------------------------------------------------------------
if [ "$hdfs" = 1 ]; then
  start_hdfs "$dir/hdfs"
  wh="http://$hdfs_http/webhdfs/v1"
  # Warm-up: a first small file through the NameNode and a DataNode.
  wait_ok "a first HDFS write" curl -sf -L -o /dev/null -X PUT -T "$dir/warm" "$wh/warm?op=CREATE&overwrite=true&user.name=$(id -un)"
  timed_large hdfs curl -sf -L -o /dev/null -X PUT -T "$dir/in" "$wh/big?op=CREATE&overwrite=true&user.name=$(id -un)" \
    -- curl -sf -L -o "$dir/out" "$wh/big?op=OPEN&user.name=$(id -un)"
  metadata webhdfs "$hdfs_http"
  stop_all
fi

python3 - "$results" "$size_mib" "$files" "$small" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    system, workload, value = line.split()
    rows.setdefault(workload, {})[{"filer": "weed", "webhdfs": "hdfs"}.get(system, system)] = float(value)
size, files, small = sys.argv[2:5]
names = [
    ("large_write", f"large write, {size} MiB (MiB/s)"),
    ("large_read", f"large read, {size} MiB (MiB/s)"),
    ("create", f"creates, {files} (/s)"),
    ("stat", f"stats, {files} (/s)"),
    ("write", f"4 KiB files written, {small} (/s)"),
    ("read", f"4 KiB files read, {small} (/s)"),
]
def cell(v):
    return "-" if v is None else f"{v:.1f}" if v < 1000 else f"{v:.0f}"
def ratio(a, b):
    return "-" if a is None or not b else f"{a / b:.2f}"
print()
print(f"{'workload (3 replicas, 8 clients)':34} {'gfs':>9} {'weed':>9} {'hdfs':>9} {'disk':>9} {'gfs/weed':>9} {'gfs/hdfs':>9}")
for key, name in names:
    r = rows.get(key, {})
    g, w, h, d = (r.get(k) for k in ("gfs", "weed", "hdfs", "disk"))
    print(f"{name:34} {cell(g):>9} {cell(w):>9} {cell(h):>9} {cell(d):>9} {ratio(g, w):>9} {ratio(g, h):>9}")
print("disk = cp + sync of the same bytes, and cat after dropping the page cache")
print("gfs fsyncs chunk writes and its log; SeaweedFS syncs neither; HDFS fsyncs its edit log, not block files")
PY
