#!/usr/bin/env bash
# Builds the gfs container images as OCI image tarballs (oci-archive), with no
# Docker engine and no registry: static binaries come from the host's cargo,
# the images are assembled from scratch with umoci. The result matches
# images/Dockerfile: two layers (base files, then one binary), user
# 65532:65532, entrypoint /usr/local/bin/<binary>, read-only-rootfs safe.
#
# Usage: scripts/build-images.sh [--strict] [--out DIR] [--tag TAG] [--profile P]
#   --strict   fail if the operator binary exists but does not build
#              (default: warn and skip its image)
#   --profile P  cargo profile of the binaries (default release; CI's
#              real-cluster suite uses dev: it checks behaviour, not speed,
#              and a cold release build takes 20 min on 2 cores)
#   --out DIR  output folder (default ${XDG_CACHE_HOME:-$HOME/.cache}/gfs/images)
#   --tag TAG  image tag (default dev); names are localhost/<binary>:TAG
#
# Import into containerd:  ctr -n k8s.io images import <out>/gfs-master.oci.tar
# Load into Docker:        docker load -i <out>/gfs-master.oci.tar
# Check afterwards with scripts/verify-images.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}/gfs"
out="$cache/images"
tag="dev"
strict=0
profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --strict) strict=1 ;;
    --out) out="$2"; shift ;;
    --tag) tag="$2"; shift ;;
    --profile) profile="$2"; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
prefix="${GFS_IMAGE_PREFIX:-localhost}"
# Release builds get their own target folder: no lock contention with the
# debug builds of scripts/test.sh, and it survives between CI runs.
export CARGO_TARGET_DIR="${GFS_IMAGES_TARGET_DIR:-$cache/target-images}"

step() { printf '\n==> %s\n' "$*"; }
start=$(date +%s)

# --- tools -----------------------------------------------------------------
need=()
for t in umoci:umoci jq:jq file:file tar:tar; do
  command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
done
[ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# --- static binaries ---------------------------------------------------------
host=$(rustc -vV | sed -n 's/^host: //p')
case "$host" in
  x86_64-unknown-linux-gnu) arch=amd64 ;;
  aarch64-unknown-linux-gnu) arch=arm64 ;;
  *) echo "unsupported host $host (need x86_64 or aarch64 linux-gnu)" >&2; exit 1 ;;
esac
# An explicit --target keeps +crt-static off build scripts and proc macros.
export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static"
case "$profile" in
  dev) bindir="$CARGO_TARGET_DIR/$host/debug" ;;
  release) bindir="$CARGO_TARGET_DIR/$host/release" ;;
  *) echo "--profile must be dev or release" >&2; exit 2 ;;
esac

bins=(gfs-master gfs-chunkserver gfs)
step "cargo build --profile $profile (static) ${bins[*]}"
cargo build --profile "$profile" --locked --target "$host" "${bins[@]/#/--bin=}"

# The operator crate is young: build its image only when the bin exists.
has_operator=$(cargo metadata --no-deps --format-version 1 --locked |
  jq '[.packages[].targets[] | select(.kind == ["bin"] and .name == "gfs-operator")] | length')
if [ "$has_operator" -gt 0 ]; then
  step "cargo build --profile $profile (static) gfs-operator"
  if cargo build --profile "$profile" --locked --target "$host" --bin gfs-operator; then
    bins+=(gfs-operator)
  elif [ "$strict" = 1 ]; then
    echo "gfs-operator does not build" >&2; exit 1
  else
    echo "WARNING: gfs-operator does not build; skipping its image" >&2
  fi
else
  echo "no gfs-operator binary in the workspace; skipping its image"
fi

for b in "${bins[@]}"; do
  if ! file -b "$bindir/$b" | grep -Eq 'static(ally|-pie) linked'; then
    echo "$bindir/$b is not static: $(file -b "$bindir/$b")" >&2; exit 1
  fi
done

# --- image assembly ------------------------------------------------------------
version=$(cargo metadata --no-deps --format-version 1 --locked |
  jq -r '[.packages[] | select(.name == "gfs-master")][0].version')
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ "$revision" != unknown ] && ! git diff --quiet HEAD -- 2>/dev/null; then
  revision="$revision-dirty"
fi
# Fixed timestamps make the layers reproducible for unchanged binaries.
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

work=$(mktemp -d "${TMPDIR:-/tmp}/gfs-images.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# Layer tarballs: sorted, numeric owners, fixed mtimes (reproducible).
mktar() { # mktar <dir> <out.tar> <paths...>
  local dir=$1 dst=$2; shift 2
  tar -C "$dir" --sort=name --mtime="@$epoch" --numeric-owner --format=ustar \
    --no-recursion -cf "$dst" "$@"
}

# Base layer: what a scratch image needs, same as the Dockerfile's rootfs stage.
base="$work/base"
mkdir -p "$base/etc/ssl/certs" "$base/data" "$base/tmp" "$base/usr/local/bin"
cp /etc/ssl/certs/ca-certificates.crt "$base/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
  > "$base/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$base/etc/group"
printf 'hosts: files dns\n' > "$base/etc/nsswitch.conf"
chmod 0644 "$base"/etc/passwd "$base"/etc/group "$base"/etc/nsswitch.conf "$base"/etc/ssl/certs/*
chown -R 0:0 "$base"
chmod 0755 "$base"/etc "$base"/etc/ssl "$base"/etc/ssl/certs "$base"/usr "$base"/usr/local "$base"/usr/local/bin
chown 65532:65532 "$base/data"; chmod 0755 "$base/data"
chmod 1777 "$base/tmp"
(cd "$base" && find . -mindepth 1 | sed 's|^\./||' | LC_ALL=C sort) > "$work/base.list"
mktar "$base" "$work/base.tar" -T "$work/base.list"

# build_image <binary> <env...> -- <extra umoci config args...>
build_image() {
  local bin=$1; shift
  local name="$prefix/$bin:$tag" lay="$work/$bin/layout" stage="$work/$bin/stage"
  mkdir -p "$stage/usr/local/bin"
  install -m 0755 -o 0 -g 0 "$bindir/$bin" "$stage/usr/local/bin/$bin"
  mktar "$stage" "$work/$bin/bin.tar" "usr/local/bin/$bin"

  umoci init --layout "$lay"
  umoci new --image "$lay:$tag"
  umoci raw add-layer --image "$lay:$tag" --history.created "$created" \
    --history.created_by "gfs base files" "$work/base.tar"
  umoci raw add-layer --image "$lay:$tag" --history.created "$created" \
    --history.created_by "COPY $bin /usr/local/bin/$bin" "$work/$bin/bin.tar"
  umoci config --image "$lay:$tag" --no-history --created "$created" \
    --os linux --architecture "$arch" \
    --config.user 65532:65532 --config.workingdir /data \
    --config.entrypoint "/usr/local/bin/$bin" \
    --config.env PATH=/usr/local/bin \
    --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --config.label "org.opencontainers.image.title=$bin" \
    --config.label "org.opencontainers.image.version=$version" \
    --config.label "org.opencontainers.image.revision=$revision" \
    --config.label "org.opencontainers.image.licenses=Apache-2.0" \
    --config.label "org.opencontainers.image.vendor=gfs" \
    "$@"
  umoci gc --layout "$lay"
  # Full name in the index, so `ctr images import` and `docker load` name
  # the image without a --base-name.
  jq -c --arg n "$name" '.manifests[0].annotations = {
      "org.opencontainers.image.ref.name": $n, "io.containerd.image.name": $n }' \
    "$lay/index.json" > "$lay/index.json.new"
  mv "$lay/index.json.new" "$lay/index.json"
  find "$lay" -exec touch -h -d "@$epoch" {} +
  (cd "$lay" && find oci-layout index.json blobs | LC_ALL=C sort) > "$work/$bin/layout.list"
  mktar "$lay" "$out/$bin.oci.tar.new" -T "$work/$bin/layout.list"
  mv "$out/$bin.oci.tar.new" "$out/$bin.oci.tar"
  printf '%-16s %-34s %8s  %s\n' "$bin" "$name" \
    "$(du -h "$out/$bin.oci.tar" | cut -f1)" "$(jq -r '.manifests[0].digest' "$lay/index.json")" \
    >> "$work/summary"
}

step "assembling images (tag $tag, revision $revision)"
: > "$work/summary"
for b in "${bins[@]}"; do
  case "$b" in
    gfs-master)
      build_image "$b" --config.env GFS_LISTEN=0.0.0.0:9700 --config.env GFS_DATA_DIR=/data \
        --config.exposedports 9700/tcp \
        --config.label "org.opencontainers.image.description=gfs master: namespace, chunk metadata, leases" ;;
    gfs-chunkserver)
      build_image "$b" --config.env GFS_LISTEN=0.0.0.0:9701 --config.env GFS_DATA_DIR=/data \
        --config.exposedports 9701/tcp \
        --config.label "org.opencontainers.image.description=gfs chunkserver: stores 64 MiB chunks with CRC32C" ;;
    gfs-operator)
      build_image "$b" \
        --config.label "org.opencontainers.image.description=gfs Kubernetes operator (GfsCluster controller)" ;;
    gfs)
      build_image "$b" --config.exposedports 9700/tcp \
        --config.cmd server --config.cmd --data-dir --config.cmd /data \
        --config.cmd --listen --config.cmd 0.0.0.0:9700 \
        --config.label "org.opencontainers.image.description=gfs CLI and all-in-one server (gfs server)" ;;
  esac
done

step "images in $out ($(( $(date +%s) - start ))s)"
cat "$work/summary"
