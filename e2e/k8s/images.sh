# Sourced by e2e/cluster. OCI image tarballs for the cluster's own parts,
# assembled with umoci from static binaries (no Docker engine, no registry):
#   localhost/pause:3.10             catatonit -P (the pod sandbox)
#   localhost/busybox:1.35           Debian's busybox-static (local-path helper pods)
#   localhost/coredns:<ver>          CoreDNS built from its Go module
#   localhost/local-path-provisioner:<ver>
#   localhost/keda:<ver>, localhost/keda-metrics-apiserver:<ver>
# Every image is one layer; names are in the index so `ctr images import`
# needs no --base-name. Callers set IMAGES (output folder).

# oci_image <name:tag> <rootfs dir> <user> <entrypoint...>
# Writes $IMAGES/<basename>.oci.tar (the name without registry and tag).
oci_image() {
  local name=$1 rootfs=$2 user=$3; shift 3
  local base=${name##*/}; base=${base%%:*}
  local tag=${name##*:} work; work=$(mktemp -d "${TMPDIR:-/tmp}/gfs-img.XXXXXX")
  local lay="$work/layout" args=() e
  for e in "$@"; do args+=(--config.entrypoint "$e"); done
  tar -C "$rootfs" --sort=name --numeric-owner --mtime=@0 -cf "$work/layer.tar" .
  umoci init --layout "$lay" >/dev/null
  umoci new --image "$lay:$tag" >/dev/null
  umoci raw add-layer --image "$lay:$tag" "$work/layer.tar" >/dev/null
  umoci config --image "$lay:$tag" --no-history --os linux --architecture amd64 \
    --config.user "$user" --config.env PATH=/usr/local/bin:/usr/bin:/bin "${args[@]}" >/dev/null
  umoci gc --layout "$lay"
  jq -c --arg n "$name" '.manifests[0].annotations = {
      "org.opencontainers.image.ref.name": $n, "io.containerd.image.name": $n }' \
    "$lay/index.json" >"$lay/index.json.new"
  mv "$lay/index.json.new" "$lay/index.json"
  tar -C "$lay" -cf "$IMAGES/$base.oci.tar.new" oci-layout index.json blobs
  mv "$IMAGES/$base.oci.tar.new" "$IMAGES/$base.oci.tar"
  rm -rf "$work"
}

# rootfs_with <dir> <binary> <path in image>: a minimal root with /etc files.
rootfs_with() {
  local dir=$1 bin=$2 dst=$3
  rm -rf "$dir"
  mkdir -p "$dir/etc" "$dir/tmp" "$dir/$(dirname "$dst")"
  chmod 1777 "$dir/tmp"
  install -m 0755 "$bin" "$dir/$dst"
  printf 'root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532::/tmp:/sbin/nologin\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$dir/etc/group"
  printf 'hosts: files dns\n' >"$dir/etc/nsswitch.conf"
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$dir/etc/ssl/certs" && cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/"
  fi
}

# build_addon_images <coredns bin> <local-path bin>
build_addon_images() {
  local w; w=$(mktemp -d "${TMPDIR:-/tmp}/gfs-rootfs.XXXXXX")
  mkdir -p "$IMAGES"
  rootfs_with "$w/pause" "$(command -v catatonit)" /pause
  oci_image localhost/pause:3.10 "$w/pause" 65535:65535 /pause -P
  rootfs_with "$w/busybox" /bin/busybox /bin/busybox
  local a
  for a in $(/bin/busybox --list); do
    [ "$a" = busybox ] || ln -sf busybox "$w/busybox/bin/$a"
  done
  oci_image localhost/busybox:1.35 "$w/busybox" 0:0 /bin/sh
  rootfs_with "$w/coredns" "$1" /coredns
  oci_image "localhost/coredns:$COREDNS_VERSION" "$w/coredns" 65532:65532 /coredns
  rootfs_with "$w/lpp" "$2" /usr/bin/local-path-provisioner
  oci_image "localhost/local-path-provisioner:$LOCAL_PATH_VERSION" "$w/lpp" 0:0 /usr/bin/local-path-provisioner
  rm -rf "$w"
}

# build_keda_images <keda bin> <keda adapter bin>
build_keda_images() {
  local w; w=$(mktemp -d "${TMPDIR:-/tmp}/gfs-rootfs.XXXXXX")
  mkdir -p "$IMAGES"
  rootfs_with "$w/keda" "$1" /keda
  oci_image "localhost/keda:$KEDA_VERSION" "$w/keda" 1000:1000 /keda
  rootfs_with "$w/keda-adapter" "$2" /keda-adapter
  oci_image "localhost/keda-metrics-apiserver:$KEDA_VERSION" "$w/keda-adapter" 1000:1000 /keda-adapter
  rm -rf "$w"
}
