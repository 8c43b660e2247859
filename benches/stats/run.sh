#!/usr/bin/env bash
# The stats service on PostgreSQL: how fast it takes events in, and how fast
# a user's activity page answers when the log is large.
#
#   bash benches/stats/run.sh
#   EVENTS=100000 ROWS=10000000 USER_ROWS=1000000 DURATION=10s CONNECTIONS="4 16" \
#     bash benches/stats/run.sh
#
# Ingest: stats (`fleet run --target stats`) declares its durable queue and
# stops; EVENTS events for 1 000 users are published into the queue; stats
# starts again and the time until every one is in the activity log gives
# events/s (through RabbitMQ, one transaction per event).
#
# Pages: a fleet on PostgreSQL with the response cache off; ROWS entries are
# written straight into the activity log (USER_ROWS of them for one user,
# spread over the last 30 days), with their per-day counts; then wrk reads
# that user's GET /api/v1/stats/activity?limit=20 and GET /api/v1/stats/user
# through the gateway over HTTPS.
#
# Needs PostgreSQL on 5432 and RabbitMQ on 5672; installs wrk from Debian and
# pika into a scratch venv when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

EVENTS=${EVENTS:-100000}
ROWS=${ROWS:-10000000}
USER_ROWS=${USER_ROWS:-1000000}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-"4 16"}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fleet/target}"

command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
cargo build --release -q -p fleet
fleet="$CARGO_TARGET_DIR/release/fleet"
here=benches/stats
database="fleet_bench_stats_$$"
pg_url="postgres://postgres@127.0.0.1:5432/$database"
amqp_url="amqp://guest:guest@127.0.0.1:5672/%2f"
exchange="bench.$$.events"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $database" postgres >/dev/null 2>&1 || true
  delete_queues "bench.$$.stats" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=benches/lib.sh
source benches/lib.sh
sql() { psql -q -t -A -h 127.0.0.1 -U postgres -d "$database" -c "$1"; }

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check pika
psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $database" postgres >/dev/null

# --- ingest ------------------------------------------------------------------
stats_env=(FLEET_DATABASE_URL="$pg_url" FLEET_AMQP_URL="$amqp_url"
  FLEET_EVENTS__EXCHANGE="$exchange" FLEET_EVENTS__DEAD_LETTER_EXCHANGE="bench.$$.dead"
  FLEET_STATS__QUEUE="bench.$$.stats" FLEET_ADMIN_LISTEN=127.0.0.1:19391)
start_fleet stats 19300 "${stats_env[@]}" -- run --target stats
sleep 1 # the queue is declared and bound
# shellcheck disable=SC2154 # pid_stats: set by start_fleet (benches/lib.sh)
kill "$pid_stats"
wait "$pid_stats" 2>/dev/null || true
"$work/venv/bin/python" "$here/publish.py" "$amqp_url" "$exchange" "$EVENTS" 1000
started=$(date +%s.%N)
start_fleet stats 19300 "${stats_env[@]}" -- run --target stats
while [ "$(sql 'SELECT COUNT(*) FROM stats.activity')" -lt "$EVENTS" ]; do sleep 0.2; done
ended=$(date +%s.%N)
ingest=$(python3 -c "print(f'{$EVENTS / ($ended - $started):.0f}')")
echo "ingest: $EVENTS events in $(python3 -c "print(f'{$ended - $started:.1f}')") s: $ingest events/s"
kill "$pid_stats"
wait "$pid_stats" 2>/dev/null || true

# --- pages over a large log --------------------------------------------------
start_fleet pages 19400 FLEET_DATABASE_URL="$pg_url" FLEET_GATEWAY__CACHE__ENABLED=false
base=https://127.0.0.1:19443
answer=$(login_answer "$base")
token=$(printf '%s' "$answer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
user=$(printf '%s' "$answer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["user"]["id"])')
others=$((ROWS - USER_ROWS))
now_us=$(($(date +%s) * 1000000))
month_us=$((30 * 86400 * 1000000))
echo "writing $ROWS entries ($USER_ROWS for one user)..."
load_started=$(date +%s)
sql "
  INSERT INTO stats.activity (id, user_id, kind, occurred_us, ip, user_agent, details)
  SELECT gen_random_uuid(), '$user', CASE WHEN g % 10 = 0 THEN 'auth.login_failed' ELSE 'auth.login_succeeded' END,
         $now_us - g::bigint * ($month_us / $USER_ROWS), '192.0.2.1', 'bench', '{}'
  FROM generate_series(1, $USER_ROWS) g;
  INSERT INTO stats.activity (id, user_id, kind, occurred_us, ip, user_agent, details)
  SELECT gen_random_uuid(), md5((g % 10000)::text)::uuid, 'auth.login_succeeded',
         $now_us - g::bigint * ($month_us / GREATEST($others, 1)), '192.0.2.1', 'bench', '{}'
  FROM generate_series(1, $others) g;
  INSERT INTO stats.activity_days (user_id, day, kind, entries)
  SELECT user_id, occurred_us / 86400000000, kind, COUNT(*) FROM stats.activity
  GROUP BY 1, 2, 3
  ON CONFLICT (user_id, day, kind) DO UPDATE SET entries = EXCLUDED.entries;
  ANALYZE stats.activity; ANALYZE stats.activity_days;" >/dev/null
echo "written in $(($(date +%s) - load_started)) s; table: $(sql "SELECT pg_size_pretty(pg_total_relation_size('stats.activity'))")"

results="$work/results"
for c in $CONNECTIONS; do
  for path in "/api/v1/stats/activity?limit=20" "/api/v1/stats/user"; do
    wrk -t1 -c"$c" -d"$DURATION" --latency -H "authorization: Bearer $token" "$base$path" |
      wrk_summary "$path:$c" >>"$results"
  done
done
echo
echo "| request | connections | req/s | p50 ms | p99 ms | non-2xx |"
echo "|---|---:|---:|---:|---:|---:|"
while read -r key rps p50 p99 errors; do
  echo "| GET ${key%:*} | ${key##*:} | $rps | $p50 | $p99 | $errors |"
done <"$results"
