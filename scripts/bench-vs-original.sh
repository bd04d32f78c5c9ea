#!/usr/bin/env bash
# Side by side with the service stepper replaces, one command: installs npm ai-inference-stepper@1.1.0
# into a temp folder, builds stepper-local and stepper-bench (release), and runs the identical workload
# against the original (its own redis-server on a free port, its rate limit off), stepper-local on its
# embedded store and stepper-local on the Upstash REST emulator, all calling the same instant fake
# provider (testkit's, started by the bench). Prints one table with the three columns and the ratios.
#
#   scripts/bench-vs-original.sh                 # 500 jobs, 16 callers, a poll every 50 ms, a 2,000-job backlog, 60 s idle
#   scripts/bench-vs-original.sh --smoke         # a tiny run (seconds), to check the command works
#   scripts/bench-vs-original.sh --jobs 1000 --callers 32 --backlog 5000 --idle-seconds 120
#
# ORIGINAL_DIR=<folder> reuses an existing install (it must hold node_modules/ai-inference-stepper);
# BENCH_PROFILE=debug uses debug builds (the test command's smoke run: figures are not meaningful).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
ORIGINAL_VERSION="1.1.0"

ARGS=()
if [ "${1:-}" = "--smoke" ]; then
  shift
  ARGS=(--jobs 20 --callers 4 --backlog 60 --idle-seconds 2)
fi
ARGS+=("$@")

# The Upstash emulator and redis-server (the same tools the test command uses).
bash scripts/install-tools.sh >/dev/null
export STEPPER_TOOLS_DIR="${STEPPER_TOOLS_DIR:-$ROOT/.tools}"
export PATH="$STEPPER_TOOLS_DIR/venv/bin:$PATH"

CLEANUP=""
if [ -z "${ORIGINAL_DIR:-}" ]; then
  ORIGINAL_DIR="$(mktemp -d -t stepper-original.XXXXXX)"
  CLEANUP="$ORIGINAL_DIR"
fi
trap '[ -n "$CLEANUP" ] && rm -rf "$CLEANUP"' EXIT
if [ ! -f "$ORIGINAL_DIR/node_modules/ai-inference-stepper/package.json" ]; then
  echo "bench-vs-original: npm install ai-inference-stepper@$ORIGINAL_VERSION into $ORIGINAL_DIR" >&2
  npm install --prefix "$ORIGINAL_DIR" --no-audit --no-fund --loglevel=error "ai-inference-stepper@$ORIGINAL_VERSION" >/dev/null
fi

PROFILE="${BENCH_PROFILE:-release}"
if [ "$PROFILE" = "release" ]; then
  cargo build --release -q -p stepper-local -p stepper-bench
else
  cargo build -q -p stepper-local -p stepper-bench
fi
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE"
exec "$TARGET/stepper-bench" vs-original --original "$ORIGINAL_DIR" --server "$TARGET/stepper-local" "${ARGS[@]}"
