#!/usr/bin/env bash
# Export and import of a long history through the gateway over HTTPS, on
# PostgreSQL.
#
#   bash benches/transfer/run.sh
#   ROWS=1000000 bash benches/transfer/run.sh
#
# A fleet on PostgreSQL (`fleet run`, in-process bus); one user whose
# activity log holds ROWS entries, written straight into the stats store.
# Export: `GET /api/v1/export` (JSON, then CSV) with curl, timed, while the
# fleet's RSS is sampled every 100 ms: rows/s and the RSS growth over the
# fleet at rest. Import: the JSON file into a second, fresh account with
# `POST /api/v1/import` (the import limit raised to hold the file), timed
# the same way. Needs PostgreSQL on 5432.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROWS=${ROWS:-1000000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fleet/target}"

cargo build --release -q -p fleet
fleet="$CARGO_TARGET_DIR/release/fleet"
database="fleet_bench_transfer_$$"
pg_url="postgres://postgres@127.0.0.1:5432/$database"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $database" postgres >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=benches/lib.sh
source benches/lib.sh
sql() { psql -q -t -A -h 127.0.0.1 -U postgres -d "$database" -c "$1"; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $database" postgres >/dev/null
start_fleet transfer 19500 FLEET_DATABASE_URL="$pg_url" FLEET_GATEWAY__CACHE__ENABLED=false \
  FLEET_TRANSFER__MAX_IMPORT_BYTES=$((2 * 1024 * 1024 * 1024))
base=https://127.0.0.1:19543
answer=$(login_answer "$base")
token=$(printf '%s' "$answer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
user=$(printf '%s' "$answer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["user"]["id"])')
now_us=$(($(date +%s) * 1000000))
echo "writing $ROWS entries for one user..."
sql "
  INSERT INTO stats.activity (id, user_id, kind, occurred_us, ip, user_agent, details)
  SELECT gen_random_uuid(), '$user', CASE WHEN g % 10 = 0 THEN 'auth.login_failed' ELSE 'auth.login_succeeded' END,
         $now_us - g::bigint * 1000000, '192.0.2.1', 'Mozilla/5.0 (X11; Linux x86_64) bench',
         CASE WHEN g % 10 = 0 THEN '{\"reason\":\"password\",\"consecutive_failures\":1}' ELSE '{\"amr\":[\"pwd\"]}' END
  FROM generate_series(1, $ROWS) g;
  ANALYZE stats.activity;" >/dev/null

# "label command...": runs it while sampling the fleet's RSS; prints
# "seconds peak-growth-MB".
measure() {
  local samples="$work/rss.$1"
  shift
  local rest started ended
  # shellcheck disable=SC2154 # pid_transfer: set by start_fleet (benches/lib.sh)
  rest=$(rss_kb "$pid_transfer")
  (while kill -0 "$pid_transfer" 2>/dev/null; do rss_kb "$pid_transfer"; sleep 0.1; done) >"$samples" &
  local sampler=$!
  started=$(date +%s.%N)
  "$@"
  ended=$(date +%s.%N)
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  local peak
  peak=$(sort -n "$samples" | tail -1)
  python3 -c "print(f'{$ended - $started:.2f} {max(0, $peak - $rest) / 1024:.0f} {$rest / 1024:.0f}')"
}

results="$work/results"
for format in json csv; do
  read -r seconds growth rest < <(measure "export-$format" \
    curl -sfk -o "$work/export.$format" -H "authorization: Bearer $token" "$base/api/v1/export?format=$format")
  size=$(stat -c %s "$work/export.$format")
  echo "export $format $seconds $growth $rest $size" >>"$results"
done
second=$(login "$base" second@example.com)
read -r seconds growth rest < <(measure import \
  curl -sfk -o "$work/import.json" -H "authorization: Bearer $second" -H 'content-type: application/json' \
  --data-binary "@$work/export.json" "$base/api/v1/import")
echo "import json $seconds $growth $rest $(stat -c %s "$work/export.json")" >>"$results"
echo "import answer: $(cat "$work/import.json")"

echo
echo "| what | rows | seconds | rows/s | RSS at rest MB | peak RSS growth MB | file MB |"
echo "|---|---:|---:|---:|---:|---:|---:|"
while read -r what format seconds growth rest size; do
  rate=$(python3 -c "print(f'{$ROWS / $seconds:,.0f}'.replace(',', ' '))")
  echo "| $what $format | $ROWS | $seconds | $rate | $rest | $growth | $((size / 1024 / 1024)) |"
done <"$results"
