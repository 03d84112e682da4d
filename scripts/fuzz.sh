#!/usr/bin/env bash
# Fuzzes the decoders of bytes that reach gfs from disks and peers (the
# targets in fuzz/fuzz_targets) with cargo-fuzz (libFuzzer), each for a
# bounded time, starting from the corpus kept in fuzz/corpus. A crash
# fails the run and leaves its input in fuzz/artifacts/<target>/; replay
# it with `scripts/fuzz.sh --replay <target> <file>`.
#
#   scripts/fuzz.sh [--seconds N] [--merge] [target...]   (default: all, 30 s each)
#   scripts/fuzz.sh --replay <target> <input>
#
# --merge adds the inputs that found new coverage to fuzz/corpus (commit
# them). cargo-fuzz is installed once under $XDG_CACHE_HOME/gfs/tools. It
# uses the nightly toolchain when rustup has one, else the stable one with
# RUSTC_BOOTSTRAP=1 (accepts any nightly-only flag cargo-fuzz may pass;
# with no sanitizer it passes only stable -C flags today).
# No sanitizer: gfs forbids unsafe code, so a bug shows as a panic, which
# libFuzzer reports as a crash; debug assertions (overflow checks) are on.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}/gfs"
export CARGO_TARGET_DIR="${GFS_FUZZ_TARGET_DIR:-$cache/target-fuzz}"
tools="$cache/tools"
seconds="${GFS_FUZZ_SECONDS:-30}"
merge=0
replay=()
targets=()
while (($#)); do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --merge) merge=1; shift ;;
    --replay) replay=("$2" "$3"); shift 3 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

if [[ ! -x "$tools/bin/cargo-fuzz" ]]; then
  echo "==> installing cargo-fuzz into $tools"
  cargo install --locked --quiet cargo-fuzz --root "$tools"
fi
export PATH="$tools/bin:$PATH"

toolchain=()
if rustup run nightly rustc -V >/dev/null 2>&1; then
  toolchain=(+nightly)
else
  echo "==> no nightly toolchain: stable with RUSTC_BOOTSTRAP=1"
  export RUSTC_BOOTSTRAP=1
fi
fuzz=(cargo "${toolchain[@]}" fuzz)
flags=(--sanitizer none --debug-assertions --release)

if ((${#targets[@]} == 0)); then
  mapfile -t targets < <("${fuzz[@]}" list)
fi

echo "==> building the fuzz targets"
"${fuzz[@]}" build "${flags[@]}"

if ((${#replay[@]})); then
  exec "${fuzz[@]}" run "${flags[@]}" "${replay[0]}" "${replay[1]}"
fi

failed=()
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  scratch="$(mktemp -d)"
  echo "==> $t: ${seconds}s from $(find "$corpus" -type f | wc -l) corpus inputs"
  # New inputs go to the scratch dir (the first one), never into the
  # clone, unless --merge keeps them.
  if "${fuzz[@]}" run "${flags[@]}" "$t" "$scratch" "$corpus" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$scratch.log" 2>&1; then
    grep -E '^(stat::number_of_executed_units|stat::new_units_added)' "$scratch.log" | sed "s/^/    /" || true
    if ((merge)); then
      if ! "${fuzz[@]}" run "${flags[@]}" "$t" "$corpus" "$scratch" -- -merge=1 >"$scratch.log" 2>&1; then
        tail -n 20 "$scratch.log"
        echo "!! $t: merging new inputs into $corpus failed" >&2
        exit 1
      fi
      echo "    corpus now $(find "$corpus" -type f | wc -l) inputs"
    fi
  else
    tail -n 40 "$scratch.log"
    echo "!! $t failed; input in fuzz/artifacts/$t/ (replay: scripts/fuzz.sh --replay $t <file>)" >&2
    failed+=("$t")
  fi
  rm -rf "$scratch" "$scratch.log"
done

if ((${#failed[@]})); then
  echo "fuzz targets failed: ${failed[*]}" >&2
  exit 1
fi
echo "==> all ${#targets[@]} fuzz targets ran ${seconds}s each without a crash"
