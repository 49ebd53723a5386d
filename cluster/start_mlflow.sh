#!/usr/bin/env bash
# (Re)start the MLflow tracking server on the Ray head: the basic-auth app, bound to the head's private
# address (never 0.0.0.0), artifacts proxied to object storage. Run by cluster.yaml's
# head_start_ray_commands, and by hand after uploading the env file:
#   ray exec cluster.yaml 'bash ~/ito-sweeps/cluster/start_mlflow.sh'
# Settings and secrets come from the head-only env file (template: cluster/mlflow-head.env.example).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE="$HOME/.ito-sweeps"
ENV_FILE="${ITO_MLFLOW_ENV_FILE:-$STATE/mlflow-head.env}"
PORT="${MLFLOW_PORT:-5000}"
mkdir -p "$STATE/logs"

if [ ! -f "$ENV_FILE" ]; then
  echo "start_mlflow: $ENV_FILE not found, MLflow not started. Upload it and start MLflow with" >&2
  echo "  ray rsync-up cluster.yaml ~/.ito-sweeps/mlflow-head.env '~/.ito-sweeps/mlflow-head.env'" >&2
  echo "  ray exec cluster.yaml 'bash ~/ito-sweeps/cluster/start_mlflow.sh'" >&2
  exit 0  # Ray itself is up; MLflow follows once the env file is there
fi
chmod 600 "$ENV_FILE"
set -a
# shellcheck disable=SC1090
. "$ENV_FILE"
set +a
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?is empty in $ENV_FILE}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?is empty in $ENV_FILE}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?is empty in $ENV_FILE (e.g. s3://BUCKET/ito-sweeps/mlartifacts)}"
BACKEND="${MLFLOW_BACKEND_STORE_URI:-sqlite:///$STATE/mlflow.db}"
export MLFLOW_AUTH_CONFIG_PATH="${MLFLOW_AUTH_CONFIG_PATH:-$HERE/basic_auth.ini}"

# The head's private address: the one Ray itself advertises to the workers.
HOST=$(python -c 'from ray._private.services import get_node_ip_address; print(get_node_ip_address())')
case "$HOST" in
  "" | 0.0.0.0 | 127.* | ::*) echo "start_mlflow: no private address found (got '$HOST')" >&2; exit 1 ;;
esac

# Stop a previous server (its whole process group: mlflow and its uvicorn workers).
if [ -f "$STATE/mlflow.pid" ]; then
  kill -- "-$(cat "$STATE/mlflow.pid")" 2>/dev/null || true
  rm -f "$STATE/mlflow.pid"
  sleep 2
fi

setsid nohup mlflow server \
  --app-name basic-auth \
  --host "$HOST" --port "$PORT" \
  --backend-store-uri "$BACKEND" \
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
  >"$STATE/logs/mlflow.log" 2>&1 </dev/null &
echo $! >"$STATE/mlflow.pid"

for _ in $(seq 90); do  # about 3 minutes: the first start creates the databases
  if curl -s -o /dev/null --max-time 5 "http://$HOST:$PORT/health"; then
    echo "http://$HOST:$PORT" >"$STATE/mlflow_uri"
    echo "start_mlflow: MLflow (basic-auth) at http://$HOST:$PORT, log $STATE/logs/mlflow.log"
    exit 0
  fi
  sleep 2
done
echo "start_mlflow: MLflow did not answer on http://$HOST:$PORT; last lines of its log:" >&2
tail -n 30 "$STATE/logs/mlflow.log" >&2
exit 1
