#!/usr/bin/env bash
# A soak: the fleet on PostgreSQL and RabbitMQ (`fleet run`, release build)
# under a fixed rate of mixed requests for a while; each minute's requests,
# failures, p50/p99/max latency, RSS and open file descriptors, which should
# stay flat.
#
#   bash benches/soak/run.sh
#   RATE=100 SECONDS_TOTAL=600 ACCOUNTS=50 bash benches/soak/run.sh
#
# Needs PostgreSQL on 5432 and RabbitMQ on 5672.
set -euo pipefail
cd "$(dirname "$0")/../.."

RATE=${RATE:-100}
SECONDS_TOTAL=${SECONDS_TOTAL:-600}
ACCOUNTS=${ACCOUNTS:-50}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fleet/target}"

cargo build --release -q -p fleet
fleet="$CARGO_TARGET_DIR/release/fleet"
database="fleet_bench_soak_$$"
exchange="bench.$$.events"
work="$(mktemp -d)"
pids=()
here="$(dirname "$0")"
# shellcheck source=benches/lib.sh
. benches/lib.sh

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $database" postgres >/dev/null 2>&1 || true
  delete_queues "$exchange.stats" "$exchange.notify" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $database" postgres
start_fleet soak 19400 \
  FLEET_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$database" \
  FLEET_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2f" \
  FLEET_EVENTS__EXCHANGE="$exchange" FLEET_EVENTS__DEAD_LETTER_EXCHANGE="$exchange.dead" \
  FLEET_STATS__QUEUE="$exchange.stats" FLEET_NOTIFY__QUEUE="$exchange.notify" \
  FLEET_NOTIFY__LISTEN=127.0.0.1:19455 FLEET_NOTIFY__URL=http://127.0.0.1:19455
# shellcheck disable=SC2154 # pid_soak: set by start_fleet (benches/lib.sh)
python3 "$here/load.py" "https://127.0.0.1:19443" "$RATE" "$SECONDS_TOTAL" "$pid_soak" "$ACCOUNTS" | tee "$work/minutes.jsonl"
python3 - "$work/minutes.jsonl" "$RATE" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print(f"\n| minute | requests | failed | p50 ms | p99 ms | max ms | RSS MB | open fds |  (target rate {sys.argv[2]}/s)")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['minute']} | {r['requests']} | {r['failed']} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['rss_mb']} | {r['open_fds']} |")
PY
