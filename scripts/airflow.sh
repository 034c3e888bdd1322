#!/usr/bin/env bash
# Airflow for OptiStack on this machine: AIRFLOW_HOME=./airflow_home (git-ignored),
# SQLite metadata, the DAGs of ./dags and the plugin of ./plugins, no example DAGs.
#
#   scripts/airflow.sh standalone     the UI and API on http://localhost:8080 (make airflow)
#   scripts/airflow.sh <args...>      any other airflow command in the same setup,
#                                     e.g. scripts/airflow.sh dags list
#   . scripts/airflow.sh              only set the environment (scripts/demo.sh does this)
#
# `standalone` starts the local servers that need no system install (PostgreSQL, Valkey
# and a DynamoDB-compatible endpoint, via `optistack local up`) unless they already run,
# so the optistack_benchmark form works as it comes; it stops the ones it started on exit.
# Set OPTISTACK_NO_LOCAL_SERVERS=1 to use only Airflow Connections / OPTISTACK_<STORE>_URL.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.venv/bin"
export PATH="$BIN:$PATH" # `airflow standalone` starts its components as `airflow ...` from PATH
export AIRFLOW_HOME="$ROOT/airflow_home"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$ROOT/plugins" # the "Benchmark reports" UI plugin
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db"
export OPTISTACK_RESULTS="${OPTISTACK_RESULTS:-$ROOT/results}"
export OPTISTACK_HOME="${OPTISTACK_HOME:-$ROOT/.optistack}"
LOCAL_STORES=(postgres redis dynamodb)

(return 0 2>/dev/null) && return 0 # sourced: the environment is all that was asked for

set -euo pipefail
mkdir -p "$AIRFLOW_HOME"

# Start the local servers that are not running yet; print what the caller must stop.
start_local_servers() {
  local running store args=()
  running="$("$BIN/optistack" local status | awk '$3 == "running" {print $1}')"
  for store in "${LOCAL_STORES[@]}"; do args+=(--store "$store"); done
  "$BIN/optistack" local up "${args[@]}" >&2
  for store in "${LOCAL_STORES[@]}"; do
    grep -qx "$store" <<<"$running" || echo "$store"
  done
}

stop_local_servers() { # the stores to stop, one argument each
  [[ $# -gt 0 ]] || return 0
  local args=() store
  for store in "$@"; do args+=(--store "$store"); done
  "$BIN/optistack" local down "${args[@]}" >/dev/null || true
}

case "${1:-standalone}" in
standalone)
  "$BIN/airflow" db migrate >/dev/null
  started=()
  if [[ "${OPTISTACK_NO_LOCAL_SERVERS:-0}" != 1 ]]; then
    mapfile -t started < <(start_local_servers)
    trap 'stop_local_servers "${started[@]}"' EXIT
  fi
  password_file="$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
  cat <<EOF
Airflow standalone: http://localhost:8080  (AIRFLOW_HOME=$AIRFLOW_HOME)
  user admin; its password is generated on the first start and written to
  $password_file
  results and reports: $OPTISTACK_RESULTS
  Ctrl-C stops Airflow$([[ ${#started[@]} -gt 0 ]] && echo " and the local servers started here: ${started[*]}").
EOF
  # Not exec: the trap above must run when Airflow stops.
  "$BIN/airflow" standalone
  ;;
*)
  exec "$BIN/airflow" "$@"
  ;;
esac
