#!/usr/bin/env bash
# Runs every check and every test of the project. Safe to run again: it
# installs only what is missing and caches the cargo target folder under
# ${XDG_CACHE_HOME:-$HOME/.cache}/gfs so later runs (and CI on a fresh
# clone) skip a cold build.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}/gfs"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
mkdir -p "$CARGO_TARGET_DIR"

step() { printf '\n==> %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
  # Rust comes from rustup on these machines; Debian's cargo is the fallback.
  step "installing cargo"
  apt-get update -qq && apt-get install -y -qq --no-install-recommends cargo rustc
fi
for comp in rustfmt clippy; do
  if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
    step "installing $comp"
    rustup component add "$comp"
  fi
done

step "cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
if ! cargo clippy --manifest-path fuzz/Cargo.toml --all-targets --locked -- -D warnings; then
  echo "fuzz/ fails clippy, or fuzz/Cargo.lock is stale after a dependency change" \
    "(run cargo check --manifest-path fuzz/Cargo.toml and commit fuzz/Cargo.lock)" >&2
  exit 1
fi

step "cargo build (binaries the process tests drive)"
cargo build --workspace --bins --locked

step "CRD check: gfs-operator crd == crds/gfscluster.yaml"
if ! diff -u crds/gfscluster.yaml <("$CARGO_TARGET_DIR/debug/gfs-operator" crd); then
  echo "crds/gfscluster.yaml is stale: run gfs-operator crd > crds/gfscluster.yaml" >&2
  exit 1
fi

step "chart CRD check: charts/gfs-operator/files/gfscluster.yaml == crds/gfscluster.yaml"
if ! diff -u crds/gfscluster.yaml charts/gfs-operator/files/gfscluster.yaml; then
  echo "the chart's CRD is stale: cp crds/gfscluster.yaml charts/gfs-operator/files/" >&2
  exit 1
fi

step "helm lint (default values, then every option on)"
helm="$(scripts/helm.sh)"
"$helm" lint --strict charts/gfs-operator
"$helm" lint --strict charts/gfs-operator -f charts/gfs-operator/ci/all-on-values.yaml

if [[ -z "${GFS_E2E_KUBECONFIG:-}" ]]; then
  # etcd + kube-apiserver for the operator tests (built once from the Go
  # module proxy into $cache/k8s; later runs reuse the binaries). A control
  # plane left by an earlier run is reused if healthy, else restarted.
  step "local control plane (e2e/control-plane up)"
  e2e/control-plane up >/dev/null
  trap 'e2e/control-plane down >/dev/null 2>&1 || true' EXIT
fi

if [[ ! -x /usr/bin/chromium ]]; then
  # Headless Chromium renders the master's status page in its e2e test.
  step "installing Chromium (Debian) for the status page's browser test"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
fi

step "cargo test"
cargo test --workspace --locked -- --test-threads=2

# gfs on a real 2-node Kubernetes cluster (e2e/cluster: its parts are built
# once into $cache/k8s; later runs start it in about a minute): the images
# of this checkout, the chart, a GfsCluster, data through a client pod,
# losing the leader master, a chunkserver with its volume and a node, KEDA
# scaling, uninstall.
if [[ "${GFS_SKIP_CLUSTER:-0}" != 1 ]]; then
  [[ $(id -u) == 0 ]] || { echo "the real-cluster suite needs root (or GFS_SKIP_CLUSTER=1)" >&2; exit 1; }
  # Debug binaries in the images: the suite checks behaviour, and a cold
  # release build of the four binaries takes 20 min on 2 cores (5 for dev).
  step "container images of this checkout (scripts/build-images.sh --profile dev)"
  scripts/build-images.sh --profile dev
  step "real cluster (e2e/cluster up)"
  # The operator tests are done with the bare control plane: free it.
  e2e/control-plane down >/dev/null 2>&1 || true
  # With KEDA (step 6 scales through the chart's ScaledObject): the longest
  # cold build of the cluster's parts (about 16 min), cached afterwards.
  kubeconfig=$(e2e/cluster up | tail -n 1)
  trap 'e2e/cluster down >/dev/null 2>&1 || true' EXIT
  e2e/cluster import "$cache"/images/*.oci.tar
  step "real-cluster suite (e2e/tests/cluster)"
  GFS_CLUSTER_KUBECONFIG="$kubeconfig" cargo test -p gfs-e2e --test cluster --locked -- --ignored --nocapture
fi

# Every decoder of disk and peer bytes, fuzzed for a bounded time from the
# corpus in fuzz/corpus (GFS_FUZZ_SECONDS per target; scripts/fuzz.sh).
step "fuzz (${GFS_FUZZ_SECONDS:-30}s per target)"
scripts/fuzz.sh --seconds "${GFS_FUZZ_SECONDS:-30}"
