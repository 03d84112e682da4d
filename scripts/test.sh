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

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build (binaries the process tests drive)"
cargo build --workspace --bins --locked

step "cargo test"
cargo test --workspace --locked -- --test-threads=2
