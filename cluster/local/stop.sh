#!/usr/bin/env bash
# Stop the cluster that cluster/local/start.sh started in STATE, and nothing else.
#
#   cluster/local/stop.sh [--state-dir DIR]      (or EMONET_CLUSTER_DIR; default /tmp/emonet-cluster)
#
# 1. SIGTERM to the two recorded PIDs: `ray start --block` shuts the GCS, raylet, dashboard and workers down on
#    SIGTERM; the MLflow server gets it for its whole process group (start.sh ran it with setsid).
# 2. After a grace period (STOP_GRACE, 30 s), any process still carrying this cluster's marker gets SIGTERM,
#    then SIGKILL. The marker is EMONET_LOCAL_CLUSTER_ID=<the random id in STATE/cluster_id>, which start.sh put
#    in the environment of what it started and every descendant inherits (Ray job drivers run in sessions of
#    their own and could otherwise outlive the raylet). Processes of other clusters never carry this id.
# Never `ray stop`: that stops every Ray instance of the user on the machine.
set -uo pipefail

STATE=${EMONET_CLUSTER_DIR:-/tmp/emonet-cluster}
GRACE=${STOP_GRACE:-30}
while [ $# -gt 0 ]; do
  case "$1" in
    --state-dir) STATE=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "stop.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -d "$STATE" ] || { echo "stop.sh: no state directory $STATE" >&2; exit 1; }
STATE=$(cd "$STATE" && pwd)
ID=$(cat "$STATE/cluster_id" 2>/dev/null || true)
RAY_PID=$(cat "$STATE/ray.pid" 2>/dev/null || true)
MLFLOW_PID=$(cat "$STATE/mlflow.pid" 2>/dev/null || true)

# PIDs whose environment holds this cluster's marker (only our own processes' environ is readable anyway)
marked() {
  [ -n "$ID" ] || return 0
  grep -lsxF "EMONET_LOCAL_CLUSTER_ID=$ID" --null-data /proc/[0-9]*/environ 2>/dev/null \
    | sed -n 's#^/proc/\([0-9]*\)/environ$#\1#p'
}
# running (not zombie: an exited child whose parent has not reaped it yet holds no resources)
alive() {
  for p in "$@"; do
    state=$(sed -n 's/^[0-9]* (.*) \([A-Z]\).*/\1/p' "/proc/$p/stat" 2>/dev/null)
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ] && echo "$p"
  done
  return 0
}

before=$(marked | tr '\n' ' ')
# `ray start --block` alone: its SIGTERM handler stops the GCS, raylet and the rest in order (signalling them all
# at once makes it wait for a GCS that is already gone). mlflow server: its whole process group.
[ -n "$RAY_PID" ] && kill -TERM "$RAY_PID" 2>/dev/null
[ -n "$MLFLOW_PID" ] && { kill -TERM -- "-$MLFLOW_PID" 2>/dev/null || kill -TERM "$MLFLOW_PID" 2>/dev/null; }

deadline=$((SECONDS + GRACE))
while [ $SECONDS -lt $deadline ] && [ -n "$(alive $RAY_PID $MLFLOW_PID $before; marked)" ]; do
  sleep 0.5
done

left=$( { alive $RAY_PID $MLFLOW_PID $before; marked; } | sort -u | tr '\n' ' ')
if [ -n "${left// /}" ]; then
  echo "stop.sh: still running after ${GRACE}s: $left- sending SIGTERM, then SIGKILL" >&2
  kill -TERM $left 2>/dev/null
  sleep 3
  left=$(alive $left | tr '\n' ' ')
  [ -n "${left// /}" ] && kill -KILL $left 2>/dev/null
  sleep 0.5
fi

left=$( { alive $RAY_PID $MLFLOW_PID $before; marked; } | sort -u | tr '\n' ' ')
if [ -n "${left// /}" ]; then
  echo "stop.sh: could not stop: $left" >&2
  exit 1
fi
rm -f "$STATE/ray.pid" "$STATE/mlflow.pid"
echo "stopped the cluster in $STATE (ray start ${RAY_PID:-none}, mlflow server ${MLFLOW_PID:-none}, and their descendants)"
