#!/usr/bin/env bash
# Make sure every server and tool the tests need is here: start the machine's
# PostgreSQL, MariaDB and Redis if they are down, install Chromium for the report check.
# Fails loudly when something cannot be had.
set -euo pipefail

log() { echo "test-servers: $*"; }

wait_for() {  # name, command...
  local name=$1; shift
  for _ in $(seq 1 30); do
    if "$@" >/dev/null 2>&1; then log "$name is up"; return 0; fi
    sleep 1
  done
  log "ERROR: $name did not come up"; return 1
}

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q; }
if ! pg_up; then
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
wait_for PostgreSQL pg_up

mariadb_up() { mysqladmin -h 127.0.0.1 -P 3306 -u root ping; }
if ! mariadb_up; then
  log "starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
fi
wait_for MariaDB mariadb_up

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG; }
if ! redis_up; then
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
wait_for Redis redis_up

if ! command -v chromium >/dev/null 2>&1; then
  log "installing Chromium (the HTML report is checked in a real headless browser)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
fi
command -v chromium >/dev/null || { log "ERROR: chromium is missing"; exit 1; }

# docker-compose.yml is checked by Compose's own parser too (no engine runs here).
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
  log "installing Debian's docker-compose (its parser checks docker-compose.yml; no engine)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 \
  || { log "ERROR: no Compose CLI to check docker-compose.yml with"; exit 1; }
log "all test servers and tools are ready"
