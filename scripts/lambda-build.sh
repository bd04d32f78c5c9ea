#!/usr/bin/env bash
# Release bootstraps of the four functions for both Lambda architectures, kept apart:
#   target/lambda/x86_64/<function>/bootstrap and target/lambda/arm64/<function>/bootstrap
# (cargo-lambda alone writes both to target/lambda/<function>/, the second overwriting the first).
# Only submit, poll, purge and step are built ([workspace.metadata.lambda.build] in Cargo.toml); name
# some of them to build only those.
#   scripts/lambda-build.sh [x86_64|arm64|all] [function ...]     (default: all, the four functions)
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${STEPPER_TOOLS_DIR:-$PWD/.tools}"
export PATH="$TOOLS/venv/bin:$PATH"
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
case "${1:-all}" in
  x86_64) ARCHES="x86_64" ;;
  arm64) ARCHES="arm64" ;;
  all) ARCHES="x86_64 arm64" ;;
  *) echo "usage: $0 [x86_64|arm64|all] [submit|poll|purge|step ...]" >&2; exit 2 ;;
esac
shift $(( $# > 0 ? 1 : 0 ))
BINS=()
for f in "$@"; do
  case "$f" in
    submit|poll|purge|step) BINS+=(--bin "$f") ;;
    *) echo "$0: unknown function $f (submit, poll, purge, step)" >&2; exit 2 ;;
  esac
done
for arch in $ARCHES; do
  flag="--x86-64"; [ "$arch" = arm64 ] && flag="--arm64"
  echo "== cargo lambda build --release $flag -> $TARGET/lambda/$arch"
  cargo lambda build --release "$flag" --lambda-dir "$TARGET/lambda/$arch" "${BINS[@]}"
done
