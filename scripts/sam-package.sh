#!/usr/bin/env bash
# The deploy path without AWS: `sam build` (BuildMethod rust-cargolambda, the template's architecture)
# then `sam package` to an S3 bucket emulated by moto, and every uploaded zip opened and checked
# (scripts/sam-package-check.py): a `bootstrap` at its root, built for the template's architecture,
# nothing else. A release cross-build of the four functions: minutes, not seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${STEPPER_TOOLS_DIR:-$PWD/.tools}"
# venv first: cargo-lambda finds zig through the python3 that has ziglang (SAM CLI has its own venv).
export PATH="$TOOLS/venv/bin:$TOOLS/sam/bin:$PATH" SAM_CLI_TELEMETRY=0
# Every zip: a lone bootstrap for the template's architecture, position-independent (ELF DYN); without
# --quick also at most 8,500,000 bytes (the constant in sam-package-check.py).
# --quick (the test command's short form): the same sam build, package and zip checks, with the release
# profile lightened through cargo's environment (opt-level 1, no LTO, many codegen units), so a cold
# cross-build fits the test command's budget. What it proves is the packaging (a lone arm64 bootstrap at
# each zip's root), not the shipped build's speed or size; without --quick it builds exactly as
# `sam build` does for a deploy.
CHECK_ARGS=(--size-limit)
if [ "${1:-}" = "--quick" ]; then
  CHECK_ARGS=()
  export CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=false \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 CARGO_PROFILE_RELEASE_DEBUG=false
  echo "sam-package: --quick: release profile lightened (opt-level 1, no LTO) for the check"
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RUN=$(mktemp -d "${TMPDIR:-/tmp}/stepper-sam.XXXXXX")
MOTO_PORT=$(free_port)
moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$RUN/moto.log" 2>&1 & MOTO_PID=$!
trap 'kill $MOTO_PID 2>/dev/null || true; rm -rf "$RUN"' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$MOTO_PORT") 2>/dev/null && break; sleep 0.1; done

echo "== sam build"
sam build --no-use-container
export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 SAM_CLI_TELEMETRY=0
python3 -c 'import boto3; boto3.client("s3").create_bucket(Bucket="stepper-artifacts")'
echo "== sam package (S3: moto)"
sam package --s3-bucket stepper-artifacts --s3-prefix stepper --output-template-file "$RUN/packaged.yaml" \
  >"$RUN/package.log" 2>&1 || { cat "$RUN/package.log"; exit 1; }
echo "== the zips"
"$TOOLS/sam/bin/python" scripts/sam-package-check.py "${CHECK_ARGS[@]}" template.yaml "$RUN/packaged.yaml"
