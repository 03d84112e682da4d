#!/usr/bin/env bash
# Checks the OCI image tarballs that scripts/build-images.sh wrote, for real:
#  1. each binary in each image is static (file + ldd);
#  2. each image config has user 65532:65532, the right entrypoint, the
#     expected env/ports (skopeo inspect; skopeo also re-reads the archive);
#  3. each image runs under runc with a read-only root filesystem, uid/gid
#     65532, no capabilities and no new privileges: `--help` for every
#     image, then a small cluster on loopback: gfs-master and
#     gfs-chunkserver from their images (only /data writable, a bind mount),
#     the chunkserver finding the master by a name in the mounted /etc/hosts,
#     and the `gfs` image putting and reading back a file; last, `gfs server`
#     (the all-in-one image) until it writes its ready file.
# Exits non-zero on the first failure, printing the container logs.
#
# Usage: scripts/verify-images.sh [--out DIR]   (default: build-images.sh's)
set -euo pipefail
cd "$(dirname "$0")/.."

out="${XDG_CACHE_HOME:-$HOME/.cache}/gfs/images"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

step() { printf '\n==> %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

need=()
for t in runc:runc skopeo:skopeo umoci:umoci jq:jq file:file ss:iproute2; do
  command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

shopt -s nullglob
archives=("$out"/*.oci.tar)
[ ${#archives[@]} -gt 0 ] || fail "no *.oci.tar in $out; run scripts/build-images.sh first"

work=$(mktemp -d "${TMPDIR:-/tmp}/gfs-verify.XXXXXX")
chmod 0755 "$work"
state="$work/runc" # our own runc state root: we touch no one else's containers
started=()
cleanup() {
  local id
  for id in "${started[@]}"; do
    runc --root "$state" kill "$id" KILL >/dev/null 2>&1 || true
    runc --root "$state" delete -f "$id" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# A free loopback TCP port (racy in theory, fine for a check).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- 1 + 2: unpack, inspect, static check ------------------------------------
declare -A rootfs entry
for a in "${archives[@]}"; do
  bin=$(basename "$a" .oci.tar)
  step "$bin: config and binary ($(du -h "$a" | cut -f1))"
  cfg=$(skopeo inspect --config "oci-archive:$a")
  user=$(jq -r '.config.User' <<<"$cfg")
  [ "$user" = "65532:65532" ] || fail "$bin: user is '$user', want 65532:65532"
  ep=$(jq -c '.config.Entrypoint' <<<"$cfg")
  [ "$ep" = "[\"/usr/local/bin/$bin\"]" ] || fail "$bin: entrypoint is $ep"
  [ "$(jq -r '.os + "/" + .architecture' <<<"$cfg")" = "linux/$(dpkg --print-architecture)" ] ||
    fail "$bin: platform $(jq -r '.os + "/" + .architecture' <<<"$cfg")"
  case "$bin" in
    gfs-master) want_port=9700/tcp ;;
    gfs-chunkserver) want_port=9701/tcp ;;
    gfs) want_port=9700/tcp ;;
    *) want_port= ;;
  esac
  if [ -n "$want_port" ]; then
    jq -e --arg p "$want_port" '.config.ExposedPorts | has($p)' <<<"$cfg" >/dev/null ||
      fail "$bin: does not expose $want_port"
  fi
  ok "user $user, entrypoint $ep, env $(jq -c '.config.Env' <<<"$cfg"), ports $(jq -c '.config.ExposedPorts // {} | keys' <<<"$cfg")"
  name=$(skopeo inspect "oci-archive:$a" >/dev/null && tar -xOf "$a" index.json |
    jq -r '.manifests[0].annotations["org.opencontainers.image.ref.name"]')
  ok "name $name"

  # Round trip through skopeo into a plain layout, then let umoci unpack it.
  mkdir -p "$work/$bin"
  skopeo copy -q "oci-archive:$a" "oci:$work/$bin/layout:img"
  umoci unpack --image "$work/$bin/layout:img" "$work/$bin/bundle" >/dev/null
  rootfs[$bin]="$work/$bin/bundle/rootfs"
  entry[$bin]="/usr/local/bin/$bin"
  exe="${rootfs[$bin]}/usr/local/bin/$bin"
  desc=$(file -b "$exe")
  grep -Eq 'static(ally|-pie) linked' <<<"$desc" || fail "$bin: not static: $desc"
  lddout=$(ldd "$exe" 2>&1 || true)
  grep -Eq 'not a dynamic executable|statically linked' <<<"$lddout" || fail "$bin: ldd says: $lddout"
  ok "static: file: ${desc%%, BuildID*}; ldd: ${lddout//[[:space:]]/ }"
  [ "$(stat -c '%u:%g %a' "$exe")" = "0:0 755" ] || fail "$bin: binary owner/mode $(stat -c '%u:%g %a' "$exe")"
  [ "$(stat -c '%u:%g' "${rootfs[$bin]}/data")" = "65532:65532" ] || fail "$bin: /data not owned by 65532"
  suid=$(find "${rootfs[$bin]}" -perm /6000 -type f)
  [ -z "$suid" ] || fail "$bin: setuid/setgid files: $suid"
  ok "binary root-owned 0755, /data owned by 65532, no setuid files, $(find "${rootfs[$bin]}" -type f | wc -l) files in image"
done

# --- 3: runc -----------------------------------------------------------------
# Container plumbing: host network (so the check can dial loopback ports),
# read-only root, uid/gid 65532, no capabilities, /data bind-mounted rw,
# /etc/hosts and /etc/resolv.conf mounted read-only as kubelet does.
printf '127.0.0.1 localhost\n127.0.0.1 gfs-master.verify.test\n' > "$work/hosts"
printf 'nameserver 127.0.0.1\noptions ndots:1 timeout:1 attempts:1\n' > "$work/resolv.conf"
chmod 0644 "$work/hosts" "$work/resolv.conf"

# mkctr <image> <id> <data-dir|""> <env-json> <args...>: writes the bundle of
# container <id>; the image's entrypoint is kept, args replace its cmd.
# tls[<image>]: a certificate folder mounted read-only at /etc/gfs/tls in
# that image's containers (GFS_TLS_DIR points there); every gfs connection
# is mTLS, as in a cluster.
declare -A tls
mkctr() {
  local bin=$1 id=$2 data=$3 env=$4; shift 4
  local dir="$work/ctr/$id"
  mkdir -p "$dir"
  if [ -n "${tls[$bin]:-}" ]; then
    env=$(jq -c '. + ["GFS_TLS_DIR=/etc/gfs/tls"]' <<<"$env")
  fi
  local args
  args=$(jq -nc --arg e "${entry[$bin]}" '[$e] + $ARGS.positional' --args -- "$@")
  jq --arg rootfs "${rootfs[$bin]}" --argjson args "$args" --argjson env "$env" \
     --arg data "$data" --arg hosts "$work/hosts" --arg resolv "$work/resolv.conf" '
    .root = {path: $rootfs, readonly: true}
    | .process.terminal = false
    | .process.args = $args
    | .process.env += $env
    | .process.capabilities = {bounding: [], effective: [], permitted: [], inheritable: [], ambient: []}
    | .process.noNewPrivileges = true
    | .linux.namespaces |= map(select(.type != "network"))
    | .mounts += [
        {destination: "/etc/hosts", type: "bind", source: $hosts, options: ["rbind", "ro"]},
        {destination: "/etc/resolv.conf", type: "bind", source: $resolv, options: ["rbind", "ro"]}]
    | if $data != "" then .mounts += [{destination: "/data", type: "bind", source: $data, options: ["rbind", "rw"]}] else . end
    | if $tls != "" then .mounts += [{destination: "/etc/gfs/tls", type: "bind", source: $tls, options: ["rbind", "ro"]}] else . end
  ' --arg tls "${tls[$bin]:-}" "$work/${bin}/bundle/config.json" > "$dir/config.json"
  echo "$dir"
}

# run_fg <image> <id> <data> <env-json> <args...>: runs to completion; prints
# stdout; returns the container's exit code. Stderr goes to $work/<id>.err.
run_fg() {
  local bin=$1 id=$2 dir; shift 2
  dir=$(mkctr "$bin" "$id" "$@")
  started+=("$id")
  local rc=0
  runc --root "$state" run -b "$dir" "$id" </dev/null 2>"$work/$id.err" || rc=$?
  runc --root "$state" delete -f "$id" >/dev/null 2>&1 || true
  return $rc
}

# run_bg <image> <id> <data> <env-json> <args...>: starts detached; logs to $work/<id>.log.
run_bg() {
  local bin=$1 id=$2 dir; shift 2
  dir=$(mkctr "$bin" "$id" "$@")
  started+=("$id")
  runc --root "$state" run -d --pid-file "$work/$id.pid" -b "$dir" "$id" \
    </dev/null >"$work/$id.log" 2>&1 || { cat "$work/$id.log" >&2; fail "runc run $id"; }
}

wait_listen() { # wait_listen <port> <id> <what>
  local i
  for i in $(seq 1 100); do
    ss -Hltn "sport = :$1" | grep -q . && return 0
    [ "$(runc --root "$state" state "$2" 2>/dev/null | jq -r .status)" = running ] ||
      { cat "$work/$2.log" >&2; fail "$3 exited before listening"; }
    sleep 0.1
  done
  cat "$work/$2.log" >&2; fail "$3 does not listen on :$1"
}

check_uid() { # check_uid <id>: the container's process runs as 65532:65532 with no caps
  local pid st
  pid=$(cat "$work/$1.pid")
  st=$(cat "/proc/$pid/status")
  grep -Eq '^Uid:\s+65532\s+65532\s+65532\s+65532$' <<<"$st" || fail "$1: $(grep ^Uid <<<"$st")"
  grep -Eq '^Gid:\s+65532\s+65532\s+65532\s+65532$' <<<"$st" || fail "$1: $(grep ^Gid <<<"$st")"
  grep -Eq '^CapEff:\s+0+$' <<<"$st" || fail "$1: $(grep ^CapEff <<<"$st")"
  grep -q ' / ro,' <(awk '$5 == "/" {print " " $5 " " $6}' "/proc/$pid/mountinfo") ||
    fail "$1: root is not read-only: $(awk '$5 == "/"' "/proc/$pid/mountinfo")"
  ok "$1: pid $pid uid/gid 65532, CapEff 0, root mounted ro"
}

stop() { # stop <id>: SIGTERM, wait for a clean exit
  local i
  runc --root "$state" kill "$1" TERM
  for i in $(seq 1 100); do
    [ "$(runc --root "$state" state "$1" 2>/dev/null | jq -r .status)" = running ] || break
    sleep 0.1
  done
  runc --root "$state" delete -f "$1" >/dev/null 2>&1 || true
}

sfx=$$
for a in "${archives[@]}"; do
  bin=$(basename "$a" .oci.tar)
  step "$bin: --help under runc (read-only root, uid 65532, no caps)"
  if ! run_fg "$bin" "help-$bin-$sfx" "" '[]' --help >"$work/help.out"; then
    cat "$work/help-$bin-$sfx.err" >&2; fail "$bin --help under runc"
  fi
  ok "$(head -1 "$work/help.out")"
done

listdir() { find "$1" -mindepth 1 -maxdepth 2 -printf '%P ' | head -c 300; }
newdata() { local d="$work/data/$1"; mkdir -p "$d"; chown 65532:65532 "$d"; chmod 0700 "$d"; echo "$d"; }

if [ -n "${rootfs[gfs]:-}" ]; then
  step "certificates with the gfs image's own binary (gfs cert)"
  gfsbin="${rootfs[gfs]}/usr/local/bin/gfs"
  pki="$work/pki"
  "$gfsbin" cert ca --dir "$pki/ca" >/dev/null || fail "gfs cert ca"
  for r in master chunkserver admin; do
    "$gfsbin" cert issue --ca-dir "$pki/ca" --role "$r" --user "verify-$r" --out "$pki/$r" >/dev/null ||
      fail "gfs cert issue --role $r"
  done
  chown -R 65532:65532 "$pki"; chmod -R go-rwx "$pki"
  tls[gfs-master]="$pki/master"; tls[gfs-chunkserver]="$pki/chunkserver"; tls[gfs]="$pki/admin"
  ok "a CA and master, chunkserver and admin certificates in $pki"
fi

if [ -n "${rootfs[gfs-master]:-}" ] && [ -n "${rootfs[gfs-chunkserver]:-}" ] && [ -n "${rootfs[gfs]:-}" ]; then
  step "cluster from the images over mTLS: master + chunkserver + gfs put/cat"
  mport=$(free_port); cport=$(free_port)
  mdata=$(newdata master); cdata=$(newdata chunkserver)
  # Flags come from the image's env defaults (GFS_DATA_DIR=/data) plus these.
  run_bg gfs-master "master-$sfx" "$mdata" \
    "$(jq -nc --arg l "127.0.0.1:$mport" '["GFS_LISTEN=" + $l, "GFS_REPLICATION=1", "GFS_CHUNK_SIZE=1MiB"]')"
  wait_listen "$mport" "master-$sfx" gfs-master
  check_uid "master-$sfx"
  [ -n "$(find "$mdata" -mindepth 1 -print -quit)" ] || fail "master wrote nothing to /data"
  ok "gfs-master listens on 127.0.0.1:$mport; /data holds: $(listdir "$mdata")"

  run_bg gfs-chunkserver "chunkserver-$sfx" "$cdata" \
    "$(jq -nc --arg m "gfs-master.verify.test:$mport" --arg l "127.0.0.1:$cport" \
      '["GFS_MASTER=" + $m, "GFS_LISTEN=" + $l, "GFS_ADVERTISE=" + $l, "GFS_CAPACITY=1073741824"]')"
  wait_listen "$cport" "chunkserver-$sfx" gfs-chunkserver
  check_uid "chunkserver-$sfx"
  ok "gfs-chunkserver listens on 127.0.0.1:$cport (master found as gfs-master.verify.test via /etc/hosts)"

  # The client image reads its input from a read-only mount.
  mkdir -p "$work/in"; head -c 3000000 /dev/urandom > "$work/in/payload"; chmod -R a+rX "$work/in"
  inmount() { jq '.mounts += [{destination: "/in", type: "bind", source: $in, options: ["rbind", "ro"]}]' \
    --arg in "$work/in" "$1" > "$1.new" && mv "$1.new" "$1"; }
  master="gfs-master.verify.test:$mport"
  put_ok=0
  for i in $(seq 1 30); do
    dir=$(mkctr gfs "put-$i-$sfx" "" '[]' --master "$master" put /in/payload /payload)
    inmount "$dir/config.json"
    started+=("put-$i-$sfx")
    if runc --root "$state" run -b "$dir" "put-$i-$sfx" </dev/null >"$work/put.out" 2>"$work/put.err"; then
      put_ok=1; break
    fi
    runc --root "$state" delete -f "put-$i-$sfx" >/dev/null 2>&1 || true
    sleep 0.5 # the chunkserver may not have registered yet
  done
  [ "$put_ok" = 1 ] || { cat "$work/put.err" "$work/master-$sfx.log" "$work/chunkserver-$sfx.log" >&2; fail "gfs put"; }
  run_fg gfs "cat-$sfx" "" '[]' --master "$master" cat /payload > "$work/payload.back" ||
    { cat "$work/cat-$sfx.err" >&2; fail "gfs cat"; }
  cmp "$work/in/payload" "$work/payload.back" || fail "payload read back differs"
  ok "gfs put + cat of 3,000,000 bytes through the images round-trips"
  [ -n "$(find "$cdata" -mindepth 1 -print -quit)" ] || fail "chunkserver wrote nothing to /data"
  ok "chunkserver /data holds: $(listdir "$cdata")"

  stop "chunkserver-$sfx"; stop "master-$sfx"
  ok "master and chunkserver stopped on SIGTERM"
  if grep -Eiq 'read-only file system|EROFS|permission denied' "$work"/*.log "$work"/*.err; then
    grep -Eih 'read-only file system|EROFS|permission denied' "$work"/*.log "$work"/*.err >&2
    fail "a container tried to write outside /data"
  fi
  ok "no read-only-filesystem or permission errors in the logs"
fi

if [ -n "${rootfs[gfs]:-}" ]; then
  step "gfs image: all-in-one \`gfs server\` with /data mounted"
  sport=$(free_port); sdata=$(newdata server)
  run_bg gfs "server-$sfx" "$sdata" '[]' server --data-dir /data --listen "127.0.0.1:$sport" \
    --chunkservers 2 --ready-file /data/ready
  for i in $(seq 1 100); do [ -s "$sdata/ready" ] && break; sleep 0.1; done
  [ -s "$sdata/ready" ] || { cat "$work/server-$sfx.log" >&2; fail "gfs server wrote no ready file"; }
  check_uid "server-$sfx"
  # gfs server made its own CA and an admin identity under /data/tls.
  run_fg gfs "ls-$sfx" "$sdata" '[]' --tls-dir /data/tls/admin --master "127.0.0.1:$sport" ls / >/dev/null ||
    { cat "$work/ls-$sfx.err" >&2; fail "gfs ls against gfs server"; }
  stop "server-$sfx"
  ok "gfs server ready at $(cat "$sdata/ready"); gfs ls answered"
fi

step "all image checks passed (${#archives[@]} images in $out)"
