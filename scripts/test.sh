#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the local stack's tools into .tools/ (npm and
# PyPI packages; redis-server from Debian when missing), checks the SAM template, runs every test,
# and builds and packages the functions as `sam deploy` would (scripts/sam-package.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-tools.sh
export STEPPER_TOOLS_DIR="$PWD/.tools"
export PATH="$STEPPER_TOOLS_DIR/venv/bin:$PATH"
export CARGO_TERM_COLOR=never

echo "== [$(date +%T)] cfn-lint template.yaml"
cfn-lint template.yaml
echo "cfn-lint: clean"

echo "== [$(date +%T)] cargo test (whole workspace, one build)"
cargo test --workspace --no-fail-fast -- --skip ten_thousand_generated_requests

echo "== [$(date +%T)] the schema-driven fuzz run against stepper-local (FUZZ_REQUESTS, default 10000)"
cargo test --workspace --test fuzz_run -- --nocapture

echo "== [$(date +%T)] cargo lambda invoke with every file in events/, through the local serverless loop"
bash scripts/invoke-events.sh

echo "== [$(date +%T)] sam build + sam package (S3: moto): one arm64 bootstrap per zip (quick profile; the deploy build: scripts/sam-package.sh)"
bash scripts/sam-package.sh --quick

echo "== [$(date +%T)] the side-by-side benchmark against the original, smoke form (debug build; figures not meaningful)"
BENCH_PROFILE=debug bash scripts/bench-vs-original.sh --smoke
