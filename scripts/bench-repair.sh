#!/usr/bin/env bash
# Re-replication benchmark (issue 4): real processes on loopback, one
# gfs-master and 4 gfs-chunkservers (replication 3, 64 MiB chunks, fsync on).
# Fills the cluster until chunkserver 0 holds at least --victim-bytes,
# kill -9s it, and measures the time until every chunk is fully replicated
# again. Baseline, same run, same disk: copying the victim's chunk files to
# another folder (cp + sync).
#
# Usage: scripts/bench-repair.sh [--dir DIR] [--file-size MiB] [--victim-gib N] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."

base="${TMPDIR:-/tmp}"
file_mib=256
victim_gib=2
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) base="$2"; shift 2 ;;
    --file-size) file_mib="$2"; shift 2 ;;
    --victim-gib) victim_gib="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gfs/target}"
cargo build --release --locked --bin gfs --bin gfs-master --bin gfs-chunkserver >&2
bin="$CARGO_TARGET_DIR/release"
# Plaintext on loopback: every gfs process here runs without TLS.
export GFS_INSECURE=1

dir="$(mktemp -d "$base/gfs-bench-repair.XXXXXX")"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$keep" = 0 ]; then rm -rf "$dir"; else echo "kept $dir" >&2; fi
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
master="127.0.0.1:$port"
"$bin/gfs-master" --listen "$master" --data-dir "$dir/master" >"$dir/master.log" 2>&1 &
pids+=($!)
cs_pids=()
for i in 0 1 2 3; do
  "$bin/gfs-chunkserver" --master "$master" --listen 127.0.0.1:0 --zone "z$i" \
    --data-dir "$dir/cs$i" >"$dir/cs$i.log" 2>&1 &
  pids+=($!)
  cs_pids+=($!)
done

status() { "$bin/gfs" --master "$master" admin status --json; }
# Prints a field of the status JSON through a small Python expression.
q() { status | python3 -c "import json,sys; s=json.load(sys.stdin); print($1)"; }

for _ in $(seq 1 300); do
  [ "$(q 'sum(1 for x in s["servers"] if x["state"]=="live")' 2>/dev/null || echo 0)" = 4 ] && break
  sleep 0.2
done
victim_id="$(cat "$dir/cs0/server-id")"
echo "cluster up: master $master, victim $victim_id" >&2

sample="$dir/sample"
head -c "$((file_mib * 1024 * 1024))" /dev/urandom >"$sample"
want=$((victim_gib * 1024 * 1024 * 1024))
n=0
victim_used() { du -sb "$dir/cs0/chunks" | cut -f1; }
while [ "$(victim_used)" -lt "$want" ]; do
  "$bin/gfs" --master "$master" put "$sample" "/bench/f$n" 2>/dev/null || {
    "$bin/gfs" --master "$master" mkdir -p /bench
    "$bin/gfs" --master "$master" put "$sample" "/bench/f$n"
  }
  n=$((n + 1))
done
victim_bytes="$(victim_used)"
echo "wrote $n files of $file_mib MiB; victim holds $victim_bytes bytes" >&2

# Wait until nothing is pending before the loss.
for _ in $(seq 1 600); do
  [ "$(q 's["replication_backlog_chunks"]+s["active_clones"]')" = 0 ] && break
  sleep 0.5
done

t0=$(date +%s.%N)
kill -9 "${cs_pids[0]}"
t_dead=""
while :; do
  line="$(q '"%s %d %d" % (next((x["state"] for x in s["servers"] if x["id"]=="'"$victim_id"'"), "?"), s["replication_backlog_chunks"], s["active_clones"])')"
  read -r st backlog active <<<"$line"
  now=$(date +%s.%N)
  if [ -z "$t_dead" ] && [ "$st" = dead ]; then t_dead=$now; fi
  if [ -n "$t_dead" ] && [ "$backlog" = 0 ] && [ "$active" = 0 ]; then t1=$now; break; fi
  sleep 0.2
done

# Baseline: the same bytes copied between folders on the same disk.
tb0=$(date +%s.%N)
cp -r "$dir/cs0/chunks" "$dir/baseline-copy"
sync -f "$dir/baseline-copy"
tb1=$(date +%s.%N)

python3 - "$victim_bytes" "$t0" "$t_dead" "$t1" "$tb0" "$tb1" <<'EOF'
import sys
b, t0, td, t1, b0, b1 = int(sys.argv[1]), *map(float, sys.argv[2:])
mb = b / 1e6
repair = mb / (t1 - td)
base = mb / (b1 - b0)
print(f"victim bytes             {b} ({b / 2**30:.2f} GiB)")
print(f"time to full replication {t1 - t0:.1f} s after kill -9 (death detected after {td - t0:.1f} s)")
print(f"{'metric':<28}{'gfs':>10}{'baseline':>10}{'ratio':>8}")
print(f"{'re-replication MB/s':<28}{repair:>10.1f}{base:>10.1f}{repair / base:>8.2f}")
print("baseline: cp -r of the victim's chunk files to another folder on the same disk, then sync")
print("gfs rate: victim bytes / (time from death detected to backlog 0), clone caps at their defaults")
EOF
