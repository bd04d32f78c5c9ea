#!/usr/bin/env bash
# Regenerates docs/openapi.json from the code and examples/typescript/src/api-types.ts from it, with the
# pinned openapi-typescript in .tools/ (scripts/install-tools.sh). Tests fail until both are current.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${STEPPER_TOOLS_DIR:-$PWD/.tools}"
env -u API_KEY_HEADER cargo run -q -p stepper-local -- --print-openapi > docs/openapi.json
"$TOOLS/node/node_modules/.bin/openapi-typescript" docs/openapi.json -o examples/typescript/src/api-types.ts
