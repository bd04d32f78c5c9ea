#!/usr/bin/env bash
# Invokes every function with every sample event in events/ through `cargo lambda watch`, as a developer
# would with `cargo lambda invoke --data-file`, against moto's SQS, and checks each answer.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${STEPPER_TOOLS_DIR:-$PWD/.tools}"
export PATH="$TOOLS/venv/bin:$PATH"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MOTO_PORT=$(free_port); INVOKE_PORT=$(free_port)
LOG=$(mktemp -d)
cleanup() { kill "$WATCH_PID" "$MOTO_PID" 2>/dev/null || true; pkill -P "$WATCH_PID" 2>/dev/null || true; }
moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$LOG/moto.log" 2>&1 & MOTO_PID=$!
trap cleanup EXIT
for _ in $(seq 50); do curl -s "http://127.0.0.1:$MOTO_PORT" >/dev/null && break; sleep 0.2; done
QUEUE_URL=$(curl -s -X POST "http://127.0.0.1:$MOTO_PORT/" \
  -H 'authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0' \
  -d 'Action=CreateQueue&QueueName=steps&Version=2012-11-05' | sed -n 's:.*<QueueUrl>\(.*\)</QueueUrl>.*:\1:p')
STEPPER_API_KEYS=dev=dev-key STEP_QUEUE_URL="$QUEUE_URL" AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" \
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 RUST_LOG=warn \
  cargo lambda watch --invoke-port "$INVOKE_PORT" >"$LOG/watch.log" 2>&1 & WATCH_PID=$!

failures=0
check() { # function event expected-fragment
  local out
  out=$(cargo lambda invoke "$1" --invoke-port "$INVOKE_PORT" --data-file "events/$2.json" 2>&1 | tail -1)
  if [[ "$out" == *"$3"* ]]; then echo "invoke $1 events/$2.json: ok ($3)"; else echo "invoke $1 events/$2.json: FAILED: $out"; failures=$((failures + 1)); fi
}
for _ in $(seq 100); do cargo lambda invoke poll --invoke-port "$INVOKE_PORT" --data-file events/health.json >/dev/null 2>&1 && break; sleep 3; done
check submit submit-report '"statusCode":202'
check submit submit-generate '"statusCode":202'
check poll poll-report '"statusCode":404'
check poll poll-job '"statusCode":404'
check submit redeliver '"statusCode":404'
check poll health '"statusCode":200'
check poll providers '"statusCode":200'
check poll openapi '"statusCode":200'
check purge purge-report '"statusCode":200'
check purge purge-job '"statusCode":404'
check step step-sqs '{"batchItemFailures":[]}'
check step step-redrive '{"redriven":0}'
[ "$failures" -eq 0 ] || { echo "cargo lambda watch log:"; tail -30 "$LOG/watch.log"; exit 1; }
