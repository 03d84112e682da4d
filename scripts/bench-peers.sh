#!/usr/bin/env bash
# Peer benchmark (issue 13): the same workloads on gfs and on SeaweedFS, on
# this machine, in one run, printed as one table with ratios.
#
# Each system runs as real processes on loopback with three storage
# servers and three replicas of every byte:
#   gfs:       gfs-master + 3 gfs-chunkservers (replication 3, 64 MiB
#              chunks; a chunkserver fsyncs each write before acking it;
#              --insecure: plaintext, as SeaweedFS here)
#   SeaweedFS: weed master (-defaultReplication=002) + 3 weed volume
#              servers + weed filer (no fsync of needle writes: its default)
# Workloads (so far): one large file written from and read back to local
# disk (gfs put/get; curl to the filer), with a plain local copy (cp +
# sync) as the disk baseline measured in the same run.
# Not yet: HDFS (MiniDFSCluster from Maven Central), 20 k creates and stats
# with 8 clients, 4 KiB small files.
#
# SeaweedFS is built once from its Go module source (`go install` refuses
# the module: its go.mod has replace directives) into
# ${XDG_CACHE_HOME:-~/.cache}/gfs/peers, outside the clone.
#
# Usage: scripts/bench-peers.sh [--size MiB] [--dir DIR] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."

SEAWEEDFS_MODULE=github.com/seaweedfs/seaweedfs
SEAWEEDFS_VERSION=v0.0.0-20261109003541-7506e5f91cd6

size_mib=256
base="${TMPDIR:-/tmp}"
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size_mib="$2"; shift 2 ;;
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
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
cargo build --release --locked --bin gfs --bin gfs-master --bin gfs-chunkserver >&2
bin="$CARGO_TARGET_DIR/release"

dir="$(mktemp -d "$base/gfs-bench-peers.XXXXXX")"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$keep" = 0 ]; then rm -rf "$dir"; else echo "kept $dir" >&2; fi
}
trap cleanup EXIT

log "input: $size_mib MiB of random bytes"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$dir/in"
sum_in="$(sha256sum <"$dir/in" | cut -d' ' -f1)"

# --- baseline: the same bytes copied on the same disk ------------------------
t0=$(now); cp "$dir/in" "$dir/copy"; sync; t1=$(now)
disk_write=$(rate "$size_mib" "$t0" "$t1")
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
t0=$(now); cat "$dir/copy" >/dev/null; t1=$(now)
disk_read=$(rate "$size_mib" "$t0" "$t1")
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
# Warm-up (first connections, first chunk allocation), as for SeaweedFS.
echo warm | "$bin/gfs" --insecure --master "$gm" put - /warm >/dev/null
t0=$(now); "$bin/gfs" --insecure --master "$gm" put "$dir/in" /big >/dev/null; t1=$(now)
gfs_write=$(rate "$size_mib" "$t0" "$t1")
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
t0=$(now); "$bin/gfs" --insecure --master "$gm" get /big "$dir/gfs-out" >/dev/null; t1=$(now)
gfs_read=$(rate "$size_mib" "$t0" "$t1")
[ "$(sha256sum <"$dir/gfs-out" | cut -d' ' -f1)" = "$sum_in" ] || { echo "gfs read back other bytes" >&2; exit 1; }
rm -f "$dir/gfs-out"

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
t0=$(now); curl -sf -o /dev/null -F "file=@$dir/in" "http://127.0.0.1:$fport/bench/"; t1=$(now)
sw_write=$(rate "$size_mib" "$t0" "$t1")
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
t0=$(now); curl -sf -o "$dir/sw-out" "http://127.0.0.1:$fport/bench/in"; t1=$(now)
sw_read=$(rate "$size_mib" "$t0" "$t1")
[ "$(sha256sum <"$dir/sw-out" | cut -d' ' -f1)" = "$sum_in" ] || { echo "SeaweedFS read back other bytes" >&2; exit 1; }
rm -f "$dir/sw-out"

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
printf '\n%-34s %10s %10s %10s %12s\n' "workload ($size_mib MiB, 3 replicas)" "gfs MiB/s" "weed MiB/s" "disk MiB/s" "gfs / weed"
printf '%-34s %10s %10s %10s %12s\n' "large write (put / filer POST)" "$gfs_write" "$sw_write" "$disk_write" "$(ratio "$gfs_write" "$sw_write")"
printf '%-34s %10s %10s %10s %12s\n' "large read (get / filer GET)" "$gfs_read" "$sw_read" "$disk_read" "$(ratio "$gfs_read" "$sw_read")"
echo "disk = cp + sync of the same bytes, and cat after dropping the page cache; gfs fsyncs chunk writes, SeaweedFS does not by default"
