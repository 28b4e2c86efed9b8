#!/usr/bin/env bash
# Three (or N) real agents on localhost against a real coordinator: the path from README.md.
#
#   scripts/local-fleet.sh [--devices N] [--versions V] [--port P] [--dir DIR]
#
# Starts `fedge coordinator serve` on 127.0.0.1 (SQLite in DIR), publishes the mnist_mlp plan
# (exporting it first if build/plans lacks it), creates an asynchronous job that stops after V
# versions, writes one example store per device from the offline MNIST digits
# (`fedge fill-stores`), and runs one `fedge device run` agent per device, each with its own
# --state-dir. It waits until the job has V versions, prints the versions table, and stops
# everything it started. Logs: DIR/coordinator.log, DIR/device-N/agent.log.
set -euo pipefail
cd "$(dirname "$0")/.."

devices=3 versions=3 port=8765 dir=build/local-fleet
while [ $# -gt 0 ]; do
  case "$1" in
    --devices) devices=$2; shift 2 ;;
    --versions) versions=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "local-fleet: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

fedge=${FEDGE:-fedge}
command -v "$fedge" > /dev/null || fedge=.venv/bin/fedge
export FEDGE_SERVER="http://127.0.0.1:$port"
export FEDGE_ADMIN_TOKEN=${FEDGE_ADMIN_TOKEN:-$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')}
if [ -d "$dir" ] && [ ! -f "$dir/.local-fleet" ] && [ -n "$(ls -A "$dir")" ]; then
  echo "local-fleet: $dir holds files this script did not write; choose another --dir" >&2
  exit 2
fi
rm -rf "$dir" && mkdir -p "$dir" && touch "$dir/.local-fleet"

pids=()
stop() { for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done; wait 2> /dev/null || true; }
trap stop EXIT

"$fedge" coordinator serve --db "sqlite:///$dir/fedge.db" --host 127.0.0.1 --port "$port" \
  > "$dir/coordinator.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  python3 -c "import urllib.request; urllib.request.urlopen('$FEDGE_SERVER/healthz', timeout=1)" \
    2> /dev/null && break
  sleep 0.2
done
python3 -c "import urllib.request; urllib.request.urlopen('$FEDGE_SERVER/healthz', timeout=1)" ||
  { echo "local-fleet: the coordinator did not start; see $dir/coordinator.log" >&2; exit 1; }

[ -f build/plans/mnist_mlp.tflite ] || "$fedge" models export mnist_mlp --out build/plans
plan_id=$("$fedge" admin --json publish-plan build/plans/mnist_mlp.tflite |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
cat > "$dir/job.json" << JOB
{"name": "local-fleet", "plan_id": $plan_id, "max_versions": $versions,
 "aggregation": {"mode": "async", "concurrency": $devices, "buffer_size": 2},
 "task": {"local_epochs": 1, "lease_seconds": 300}}
JOB
job_id=$("$fedge" admin --json create-job --config "$dir/job.json" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
echo "job $job_id on $FEDGE_SERVER (admin token in FEDGE_ADMIN_TOKEN); $devices agents"

"$fedge" fill-stores --out "$dir" --devices "$devices" --examples 300
for n in $(seq "$devices"); do
  "$fedge" device run --data "$dir/device-$n/examples.db" --state-dir "$dir/device-$n/state" \
    --probe none --seed "$n" > "$dir/device-$n/agent.log" 2>&1 &
  pids+=($!)
done

while :; do
  status=$("$fedge" admin --json jobs |
    python3 -c "import json, sys; j = [j for j in json.load(sys.stdin) if j['id'] == $job_id][0]; print(j['status'], j['current_version'])")
  echo "job $job_id: $status"
  case "$status" in running\ *|paused\ *) sleep 2 ;; *) break ;; esac
done
"$fedge" admin versions "$job_id"
"$fedge" admin devices
