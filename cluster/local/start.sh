#!/usr/bin/env bash
# Start a one-node Ray cluster and an MLflow tracking server on 127.0.0.1, for `emonet submit` on one machine.
#
#   cluster/local/start.sh [--state-dir DIR] [--dashboard-port P] [--ray-port P] [--mlflow-port P] [--num-cpus N]
#
# Every flag has an environment variable (EMONET_CLUSTER_DIR, RAY_DASHBOARD_PORT, RAY_GCS_PORT, MLFLOW_PORT,
# RAY_NUM_CPUS; also RAY_BIN, MLFLOW_BIN, RAY_OBJECT_STORE_BYTES, START_TIMEOUT). Ports default to "auto": the usual
# port (8265, 6379, 5000) when it is free, otherwise a free one, so a second cluster or a local `emonet train` on
# the same machine never collides. Ray's other fixed-default ports (client server, dashboard agent, metrics,
# runtime-env agent, node/object manager) always get free ports, and the workers a random 1000-port window.
#
# What it starts, each in its own session (setsid) with its PID recorded in the state directory:
#   ray start --head --block    -> ray.pid     (the GCS, raylet, dashboard and workers are its descendants)
#   mlflow server               -> mlflow.pid  (sqlite backend, artifacts served from the state directory)
# cluster/local/stop.sh stops exactly these, by PID (see there). The state directory also gets env.sh (what a
# client must export), cluster.json (addresses and PIDs) and the logs. Keep it short: Ray puts unix sockets
# under it (a 107-byte limit).
#
# Token authentication (Ray >= 2.52; 2.60 enables it for `ray start` when ~/.ray/auth_token exists): this script
# always enables it, with a fresh token of this cluster's own in STATE/auth_token (never ~/.ray/auth_token, which
# other clusters on the machine may use). Clients need RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH (in env.sh).
set -euo pipefail

STATE=${EMONET_CLUSTER_DIR:-/tmp/emonet-cluster}
DASH_PORT=${RAY_DASHBOARD_PORT:-auto}
GCS_PORT=${RAY_GCS_PORT:-auto}
MLFLOW_PORT=${MLFLOW_PORT:-auto}
NUM_CPUS=${RAY_NUM_CPUS:-$(nproc)}
OBJECT_STORE=${RAY_OBJECT_STORE_BYTES:-268435456}  # 256 MB: training streams shards itself, Ray stores little
TIMEOUT=${START_TIMEOUT:-180}
RAY_BIN=${RAY_BIN:-$(command -v ray || true)}
MLFLOW_BIN=${MLFLOW_BIN:-$(command -v mlflow || true)}

while [ $# -gt 0 ]; do
  case "$1" in
    --state-dir) STATE=$2; shift 2 ;;
    --dashboard-port) DASH_PORT=$2; shift 2 ;;
    --ray-port) GCS_PORT=$2; shift 2 ;;
    --mlflow-port) MLFLOW_PORT=$2; shift 2 ;;
    --num-cpus) NUM_CPUS=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "start.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

[ -x "$RAY_BIN" ] || { echo "start.sh: no 'ray' executable (activate the venv or set RAY_BIN)" >&2; exit 2; }
[ -x "$MLFLOW_BIN" ] || { echo "start.sh: no 'mlflow' executable (activate the venv or set MLFLOW_BIN)" >&2; exit 2; }
BIN_DIR=$(cd "$(dirname "$RAY_BIN")" && pwd)
PYTHON=${PYTHON:-$BIN_DIR/python}
[ -x "$PYTHON" ] || PYTHON=$(command -v python3)

mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
for f in ray.pid mlflow.pid; do
  if [ -f "$STATE/$f" ] && kill -0 "$(cat "$STATE/$f")" 2>/dev/null; then
    echo "start.sh: $STATE already runs a cluster ($f = $(cat "$STATE/$f")); stop it with cluster/local/stop.sh" >&2
    exit 1
  fi
done
rm -f "$STATE"/ray.pid "$STATE"/mlflow.pid

# Free ports: the preferred port when it is free, else whatever the kernel hands out (bound to 127.0.0.1, then
# released; a race with another process is possible but unlikely, and start-up then fails loudly).
pick_port() {
  "$PYTHON" - "$1" "$2" <<'EOF'
import socket, sys
want, preferred = sys.argv[1], int(sys.argv[2])
def free(p):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", p)); return s.getsockname()[1]
        except OSError:
            return None
print(int(want) if want != "auto" else (preferred and free(preferred)) or free(0))
EOF
}
DASH_PORT=$(pick_port "$DASH_PORT" 8265)
MLFLOW_PORT=$(pick_port "$MLFLOW_PORT" 5000)
GCS_WANT=$GCS_PORT

"$PYTHON" -c "import secrets; print(secrets.token_hex(32))" > "$STATE/auth_token"
chmod 600 "$STATE/auth_token"
mkdir -p "$STATE/mlflow/artifacts"

# Everything the cluster starts inherits these (set for the children only, not for this script): the token,
# gloo on loopback (the host name may resolve to an address that is not 127.0.0.1), the venv first on PATH (job
# entrypoints run `python -m emonet_dist.cli`), and a random marker by which stop.sh recognises the processes of
# this cluster and of no other.
CLUSTER_ID=$("$PYTHON" -c "import uuid; print(uuid.uuid4().hex)")
echo "$CLUSTER_ID" > "$STATE/cluster_id"
CHILD_ENV=(env -u RAY_ADDRESS RAY_AUTH_MODE=token "RAY_AUTH_TOKEN_PATH=$STATE/auth_token"
           "EMONET_LOCAL_CLUSTER_ID=$CLUSTER_ID" "GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-lo}"
           "PATH=$BIN_DIR:$PATH" RAY_USAGE_STATS_ENABLED=0
           # a single-machine cluster: node IP 127.0.0.1 (ray start otherwise replaces 127.0.0.1 by the host's
           # routable address); no other node can join
           RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
           # on SIGTERM, `ray start --block` first drains the node for 30 s (for Ray Serve); nothing to drain here
           RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0
           # MLflow 3's server-side job runner (a pool of huey consumers) is not used here
           MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false)

start_ray() {
  GCS_PORT=$(pick_port "$GCS_WANT" 6379)
  CLIENT_PORT=$(pick_port auto 0); AGENT_PORT=$(pick_port auto 0); AGENT_GRPC=$(pick_port auto 0)
  METRICS_PORT=$(pick_port auto 0); RTENV_PORT=$(pick_port auto 0); NM_PORT=$(pick_port auto 0)
  OM_PORT=$(pick_port auto 0)
  WORKER_MIN=$((20000 + (RANDOM % 10) * 1000)); WORKER_MAX=$((WORKER_MIN + 999))
  # RAY_ADDRESS for the cluster's own processes: Ray Train's placement-group cleaner (an actor) looks the cluster
  # up by address, and with another Ray instance on the machine "auto" finds several and fails
  "${CHILD_ENV[@]}" "RAY_ADDRESS=127.0.0.1:$GCS_PORT" setsid "$RAY_BIN" start --head --block --node-ip-address=127.0.0.1 --port="$GCS_PORT" \
    --dashboard-host=127.0.0.1 --dashboard-port="$DASH_PORT" --include-dashboard=true \
    --ray-client-server-port="$CLIENT_PORT" --dashboard-agent-listen-port="$AGENT_PORT" \
    --dashboard-agent-grpc-port="$AGENT_GRPC" --metrics-export-port="$METRICS_PORT" \
    --runtime-env-agent-port="$RTENV_PORT" --node-manager-port="$NM_PORT" --object-manager-port="$OM_PORT" \
    --min-worker-port="$WORKER_MIN" --max-worker-port="$WORKER_MAX" --num-cpus="$NUM_CPUS" \
    --object-store-memory="$OBJECT_STORE" --temp-dir="$STATE/ray" --disable-usage-stats \
    >> "$STATE/ray.log" 2>&1 < /dev/null &
  echo $! > "$STATE/ray.pid"
}
: > "$STATE/ray.log"
start_ray

"${CHILD_ENV[@]}" setsid "$MLFLOW_BIN" server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
  --backend-store-uri "sqlite:///$STATE/mlflow/mlflow.db" \
  --artifacts-destination "$STATE/mlflow/artifacts" --serve-artifacts \
  > "$STATE/mlflow.log" 2>&1 < /dev/null &
echo $! > "$STATE/mlflow.pid"

DASHBOARD=http://127.0.0.1:$DASH_PORT
MLFLOW=http://127.0.0.1:$MLFLOW_PORT
cat > "$STATE/env.sh" <<EOF
# source this file to use the cluster in $STATE
export RAY_API_SERVER_ADDRESS=$DASHBOARD   # emonet submit / emonet jobs / ray job (not RAY_ADDRESS: ray.init reads it)
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=$STATE/auth_token
export MLFLOW_TRACKING_URI=$MLFLOW
export EMONET_LOCAL_CLUSTER=$DASHBOARD   # emonet submit: jobs here run this machine's Python (no pip environments)
EOF

# Readiness: `ray start` has finished starting the node (the raylet registered, which on a busy machine can
# miss Ray's fixed 15-30 s start-up waits: then `ray start` exits and is retried, up to RAY_START_ATTEMPTS), the
# dashboard's job API answers with the token, and MLflow's health endpoint answers. On failure, undo everything.
deadline=$((SECONDS + TIMEOUT))
attempts=${RAY_START_ATTEMPTS:-3}
ready() { grep -q "Ray runtime started" "$STATE/ray.log" && kill -0 "$(cat "$STATE/ray.pid")" 2>/dev/null \
            && curl -sf -o /dev/null --max-time 5 -H "Authorization: Bearer $(cat "$STATE/auth_token")" \
                    "$DASHBOARD/api/jobs/" \
            && curl -sf -o /dev/null --max-time 5 "$MLFLOW/health"; }
give_up() {
  echo "start.sh: $1; last lines of $STATE/$2.log:" >&2
  tail -n 20 "$STATE/$2.log" >&2
  "$(dirname "$0")/stop.sh" --state-dir "$STATE" >/dev/null 2>&1 || true
  exit 1
}
until ready; do
  if ! kill -0 "$(cat "$STATE/mlflow.pid")" 2>/dev/null; then give_up "mlflow server exited during start-up" mlflow; fi
  if ! kill -0 "$(cat "$STATE/ray.pid")" 2>/dev/null; then
    attempts=$((attempts - 1))
    [ $attempts -gt 0 ] || give_up "ray start failed ${RAY_START_ATTEMPTS:-3} times" ray
    echo "start.sh: ray start exited during start-up (see $STATE/ray.log); retrying" >&2
    sleep 2; start_ray
  fi
  [ $SECONDS -lt $deadline ] || give_up "not ready after ${TIMEOUT}s" ray
  sleep 1
done
cat > "$STATE/cluster.json" <<EOF
{"state_dir": "$STATE", "dashboard": "$DASHBOARD", "gcs_address": "127.0.0.1:$GCS_PORT",
 "mlflow": "$MLFLOW", "auth_token_path": "$STATE/auth_token",
 "ray_pid": $(cat "$STATE/ray.pid"), "mlflow_pid": $(cat "$STATE/mlflow.pid"), "cluster_id": "$CLUSTER_ID",
 "ports": {"dashboard": $DASH_PORT, "gcs": $GCS_PORT, "mlflow": $MLFLOW_PORT, "client": $CLIENT_PORT,
           "workers": [$WORKER_MIN, $WORKER_MAX]}}
EOF

echo "Ray dashboard + job API: $DASHBOARD"
echo "Ray GCS (ray.init):      127.0.0.1:$GCS_PORT"
echo "MLflow tracking server:  $MLFLOW"
echo "state, logs, PIDs:       $STATE (ray.pid $(cat "$STATE/ray.pid"), mlflow.pid $(cat "$STATE/mlflow.pid"))"
echo
echo "Token authentication is on. Before emonet submit / emonet jobs / ray job, run:"
echo "  source $STATE/env.sh"
echo "Stop with: $(dirname "$0")/stop.sh --state-dir $STATE"
