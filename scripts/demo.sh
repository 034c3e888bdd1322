#!/usr/bin/env bash
# The OptiStack demo (make demo): start local PostgreSQL, Valkey and a DynamoDB-compatible
# endpoint (no system install needed), run the optistack_benchmark DAG once with
# `airflow dags test` (every task in this process, SQLite metadata in ./airflow_home),
# and print where the HTML report is.
#
# Local servers the demo started are stopped at the end; ones already running stay.
# Full Airflow output: airflow_home/demo.log. Other settings: OPTISTACK_DEMO_CONF='{...}'
# (the optistack_benchmark params, as JSON).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/airflow.sh
. "$ROOT/scripts/airflow.sh" # AIRFLOW_HOME, DAGs folder, SQLite, OPTISTACK_RESULTS, OPTISTACK_HOME

DEFAULT_CONF='{"stores": ["postgres", "redis", "dynamodb"], "workload": "b", "record_count": 10000,
  "duration_s": 20, "users": 8, "warmup_s": 3}'
CONF="${OPTISTACK_DEMO_CONF:-$DEFAULT_CONF}"
LOG="$AIRFLOW_HOME/demo.log"
mkdir -p "$AIRFLOW_HOME"
: >"$LOG"
start=$SECONDS

echo "== Airflow metadata database: $AIRFLOW_HOME"
"$BIN/airflow" db migrate >>"$LOG" 2>&1

echo "== local servers: ${LOCAL_STORES[*]}"
running="$("$BIN/optistack" local status | awk '$3 == "running" {print $1}')"
args=()
for store in "${LOCAL_STORES[@]}"; do args+=(--store "$store"); done
up="$("$BIN/optistack" local up "${args[@]}")"
grep -v '^export ' <<<"$up" | sed '/^$/d'
eval "$(grep '^export OPTISTACK_' <<<"$up")" # OPTISTACK_<STORE>_URL for the DAG's tasks
started=()
for store in "${LOCAL_STORES[@]}"; do
  grep -qx "$store" <<<"$running" || started+=("$store")
done
stop_started() {
  [[ ${#started[@]} -gt 0 ]] || return 0
  local down=()
  for store in "${started[@]}"; do down+=(--store "$store"); done
  "$BIN/optistack" local down "${down[@]}" >/dev/null || true
}
trap stop_started EXIT

echo "== airflow dags test optistack_benchmark (full output: $LOG)"
# The console gets the engine's lines and the end of each task; `dags test` exits
# non-zero when the DAG run failed.
status=0
"$BIN/airflow" dags test optistack_benchmark -c "$CONF" 2>&1 | tee -a "$LOG" |
  sed -nE \
    -e 's/.*\[DAG TEST\] end task task_id=([^ ]+) map_index=(-?[0-9]+).*/   done: \1 [\2]/p' \
    -e 's/^[^ ]+ \[(info|warning|error) *\] (.*) \[optistack\].*/   \2/p' \
    -e 's/.*DagRun Finished: .*(state=[a-z_]+).*/== DAG run finished, \1/p' || status=$?

report="$(sed -nE 's/.*report of run [^:]+: ([^ ]+\.html).*/\1/p' "$LOG" | tail -1)"
elapsed=$((SECONDS - start))
if [[ $status -eq 0 && -n "$report" ]]; then
  echo "== done in ${elapsed}s. Report: $report"
  echo "   all reports: $OPTISTACK_RESULTS/reports/index.html"
else
  echo "== the run did not succeed (${elapsed}s)${report:+; report: $report}; see $LOG" >&2
  exit 1
fi
