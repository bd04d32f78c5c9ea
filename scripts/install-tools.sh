#!/usr/bin/env bash
# Installs what the tests need into .tools/ (git-ignored), once: the Upstash REST emulator, TypeScript,
# Node's type definitions and openapi-typescript (npm, for the examples/typescript client), moto's SQS
# server, cfn-lint, cargo-lambda (with ziglang, its linker), openapi-spec-validator and kubernetes-validate
# (PyPI, in a venv),
# the SAM CLI (PyPI, in a venv of its own: its pins must not move moto's or cfn-lint's), Rust's arm64
# target (rustup, for `sam build` of the arm64 functions), and redis-server, faketime, curl, jq, Chromium and buildah (Debian)
# only when missing; Playwright (PyPI) drives that Chromium in the dashboard's browser test (it never
# downloads a browser of its own).
# A second run finds the stamp and returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${STEPPER_TOOLS_DIR:-$PWD/.tools}"
NPM_PACKAGES="@humanwhocodes/upstash-redis-server@1.0.0 typescript@5.9.3 @types/node@20.19.43 openapi-typescript@7.13.0"
PY_PACKAGES="moto[server]==5.2.5 cfn-lint==1.58.0 cargo-lambda==1.9.2 ziglang==0.17.1 openapi-spec-validator==0.9.0 playwright==1.65.2 prometheus-client==0.26.0 kubernetes-validate==1.37.0"
SAM_PACKAGES="aws-sam-cli==1.170.0"
STAMP="$TOOLS/.stamp-$(echo "$NPM_PACKAGES $PY_PACKAGES $SAM_PACKAGES" | sha256sum | cut -c1-16)"
mkdir -p "$TOOLS"

# Debian packages: redis-server, and faketime (libfaketime runs a redis-server whose clock is a month
# ahead, the guard against tests anchored to a calendar date).
DEBS=""
command -v redis-server >/dev/null 2>&1 || DEBS="$DEBS redis-server"
command -v faketime >/dev/null 2>&1 || DEBS="$DEBS faketime"
# curl and jq for the README's try-it commands, which the test command runs (local/tests/docs.rs).
command -v curl >/dev/null 2>&1 || DEBS="$DEBS curl"
command -v jq >/dev/null 2>&1 || DEBS="$DEBS jq"
# Chromium for the dashboard's browser test (local/tests/dashboard.rs), at /usr/bin/chromium.
[ -x /usr/bin/chromium ] || DEBS="$DEBS chromium"
# buildah for the container image test (local/tests/image.rs builds the image FROM scratch with scripts/image.sh).
command -v buildah >/dev/null 2>&1 || DEBS="$DEBS buildah"
if [ -n "$DEBS" ]; then
  echo "install-tools:$DEBS (Debian)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq $DEBS >/dev/null
fi
# (libfaketime in the environment, as in `faketime -f +30d scripts/test.sh`, hangs jemalloc's start: asked without it.)
echo "install-tools: redis-server $(env -u LD_PRELOAD redis-server --version | awk '{print $3}')"

if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -q '^aarch64-unknown-linux-gnu$'; then
  echo "install-tools: rustup target add aarch64-unknown-linux-gnu"
  rustup target add aarch64-unknown-linux-gnu >/dev/null
fi

if [ -f "$STAMP" ]; then
  echo "install-tools: npm and PyPI tools already in $TOOLS"
  exit 0
fi

echo "install-tools: $NPM_PACKAGES (npm)"
mkdir -p "$TOOLS/node"
npm install --prefix "$TOOLS/node" --no-audit --no-fund --loglevel=error $NPM_PACKAGES >/dev/null

echo "install-tools: $PY_PACKAGES (PyPI, venv)"
python3 -m venv "$TOOLS/venv"
"$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check $PY_PACKAGES

echo "install-tools: $SAM_PACKAGES (PyPI, venv .tools/sam)"
python3 -m venv "$TOOLS/sam"
"$TOOLS/sam/bin/pip" install --quiet --disable-pip-version-check $SAM_PACKAGES

touch "$STAMP"
echo "install-tools: done"
