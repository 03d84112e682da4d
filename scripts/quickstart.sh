#!/usr/bin/env bash
# Builds gfs, starts the all-in-one local cluster (one master and three
# chunkservers in one process) and walks through a quickstart against it.
# The cluster keeps running afterwards; stop it with `kill $(cat DIR/server.pid)`.
# Usage: scripts/quickstart.sh [DATA_DIR]   (default ./gfs-data)
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-./gfs-data}"
mkdir -p "$data"
data="$(cd "$data" && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gfs/target}"

echo "==> building (release)"
cargo build --release --locked --bins
gfs="$CARGO_TARGET_DIR/release/gfs"

if [ -f "$data/server.pid" ] && kill -0 "$(cat "$data/server.pid")" 2>/dev/null; then
  echo "==> a gfs server already runs on $data (pid $(cat "$data/server.pid"))"
else
  echo "==> starting: gfs server --data-dir $data"
  rm -f "$data/ready"
  nohup "$gfs" server --data-dir "$data" --listen 127.0.0.1:9700 --ready-file "$data/ready" \
    >"$data/server.log" 2>&1 &
  echo $! >"$data/server.pid"
  for _ in $(seq 1 300); do [ -s "$data/ready" ] && break; sleep 0.1; done
  [ -s "$data/ready" ] || { echo "server did not start; see $data/server.log"; exit 1; }
fi
export GFS_MASTER="$(cat "$data/ready")"
# gfs server made a CA and certificates under $data/tls; the CLI uses the
# admin one (mTLS, TLS 1.3).
export GFS_TLS_DIR="$data/tls/admin"
echo "==> cluster up, master $GFS_MASTER (TLS identity $GFS_TLS_DIR)"

run() { printf '$ %s\n' "$*"; "$@"; }
sample="$(mktemp)"
head -c 5000000 /dev/urandom >"$sample"
"$gfs" rm -r /quickstart 2>/dev/null || true   # make the walk-through repeatable
run "$gfs" admin status
run "$gfs" mkdir -p /quickstart/logs
run "$gfs" put -f "$sample" /quickstart/sample.bin
run "$gfs" ls -l /quickstart
run "$gfs" stat /quickstart/sample.bin
run "$gfs" get /quickstart/sample.bin "$sample.back"
cmp "$sample" "$sample.back" && echo "round trip: bytes equal"
echo "first record" >"$sample.rec"
run "$gfs" append /quickstart/logs/app.log "$sample.rec"
run "$gfs" append /quickstart/logs/app.log "$sample.rec"
run "$gfs" cat /quickstart/logs/app.log
run "$gfs" mv /quickstart/logs/app.log /quickstart/logs/app.log.1
run "$gfs" ls /quickstart/logs
# Owners and modes (HDFS's model): the admin certificate's user owns what
# it created; chmod takes octal or symbolic modes.
run "$gfs" chmod 640 /quickstart/sample.bin
run "$gfs" chmod -R go-w /quickstart/logs
run "$gfs" ls -l /quickstart
rm -f "$sample" "$sample.back" "$sample.rec"
echo
echo "gfs is running: GFS_MASTER=$GFS_MASTER GFS_TLS_DIR=$GFS_TLS_DIR, data in $data, log in $data/server.log"
echo "stop it with: kill \$(cat $data/server.pid)"
