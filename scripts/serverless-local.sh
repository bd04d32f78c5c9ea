#!/usr/bin/env bash
# The serverless path on this machine, in one command: redis-server + the Upstash REST emulator +
# moto's SQS (from .tools/, scripts/install-tools.sh), the step queue and its dead-letter queue,
# `cargo lambda watch` running the four functions with their environment, and the local SQS -> step
# driver (scripts/sqs-step-driver.py) playing Lambda's SQS event source. The API answers on
# http://127.0.0.1:$WATCH_PORT/v1/... as it does behind API Gateway (the watch router in Cargo.toml).
#
#   scripts/serverless-local.sh            # Ctrl-C stops everything
# Environment: WATCH_PORT (9000), SERVERLESS_ENV_FILE (scripts/serverless-local.env), STEP_VISIBILITY
# (visibility timeout of the step queue in seconds, 30), STEP_MAX_RECEIVE (10), WATCH_ARGS (more
# `cargo lambda watch` flags, e.g. --ignore-changes). Provider keys and STEPPER_CONFIG go in the env file.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS="${STEPPER_TOOLS_DIR:-$ROOT/.tools}"
export PATH="$TOOLS/venv/bin:$PATH"
WATCH_PORT="${WATCH_PORT:-9000}"
ENV_FILE="${SERVERLESS_ENV_FILE:-$ROOT/scripts/serverless-local.env}"
VISIBILITY="${STEP_VISIBILITY:-30}"
MAX_RECEIVE="${STEP_MAX_RECEIVE:-10}"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # port what
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "serverless-local: $2 did not listen on port $1" >&2; return 1
}
RUN=$(mktemp -d "${TMPDIR:-/tmp}/stepper-serverless.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  # cargo lambda watch stops its function processes on TERM; give everything 3 s, then KILL.
  for _ in $(seq 30); do
    alive=0; for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break; sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

REDIS_PORT=$(free_port); UPSTASH_PORT=$(free_port); MOTO_PORT=$(free_port)
TOKEN="local-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$RUN/redis.log" 2>&1 & PIDS+=($!)
wait_port "$REDIS_PORT" redis-server
URS_TOKEN="$TOKEN" PORT="$UPSTASH_PORT" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
  node "$TOOLS/node/node_modules/@humanwhocodes/upstash-redis-server/dist/server.js" >"$RUN/upstash.log" 2>&1 & PIDS+=($!)
moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$RUN/moto.log" 2>&1 & PIDS+=($!)
wait_port "$UPSTASH_PORT" "the Upstash emulator"
wait_port "$MOTO_PORT" moto_server

export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_REGION="${AWS_REGION:-us-east-1}" AWS_DEFAULT_REGION="${AWS_REGION:-us-east-1}"
# The queues as template.yaml declares them, with a visibility timeout fit for a terminal.
QUEUE_URL=$(python3 - "$VISIBILITY" "$MAX_RECEIVE" <<'PY'
import json, sys, boto3
sqs = boto3.client("sqs")
dlq = sqs.create_queue(QueueName="steps-dead-letter", Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
url = sqs.create_queue(QueueName="steps", Attributes={
    "VisibilityTimeout": sys.argv[1],
    "MessageRetentionPeriod": "345600",
    "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": sys.argv[2]}),
})["QueueUrl"]
print(url)
PY
)

# cargo-lambda's env-file reader takes NAME=value lines only: comments and blank lines are dropped.
{ grep -Ev '^[[:space:]]*(#|$)' "$ENV_FILE" || true
  echo "UPSTASH_REDIS_REST_URL=http://127.0.0.1:$UPSTASH_PORT"
  echo "UPSTASH_REDIS_REST_TOKEN=$TOKEN"
  echo "STEP_QUEUE_URL=$QUEUE_URL"
  echo "AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL"
} >"$RUN/functions.env"

echo "serverless-local: redis-server :$REDIS_PORT, Upstash emulator :$UPSTASH_PORT, moto SQS :$MOTO_PORT"
echo "serverless-local: step queue $QUEUE_URL (visibility ${VISIBILITY}s, dead-letter after $MAX_RECEIVE receives)"
echo "serverless-local: API on http://127.0.0.1:$WATCH_PORT/v1/... (cargo lambda watch; env from $ENV_FILE)"
# shellcheck disable=SC2086
cargo lambda watch --invoke-address 127.0.0.1 --invoke-port "$WATCH_PORT" --env-file "$RUN/functions.env" ${WATCH_ARGS:-} & PIDS+=($!)
wait_port "$WATCH_PORT" "cargo lambda watch"
python3 "$ROOT/scripts/sqs-step-driver.py" "$QUEUE_URL" "http://127.0.0.1:$WATCH_PORT" & PIDS+=($!)
echo "serverless-local: ready"
wait -n "${PIDS[@]}"
echo "serverless-local: a component exited; stopping" >&2
exit 1
