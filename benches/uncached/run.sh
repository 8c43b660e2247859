#!/usr/bin/env bash
# The uncached path: GET /api/v1/users/me (transcoded, one gRPC hop, a store
# read) beside the cache hit of GET /api/v1/users in the same run, over
# HTTPS, at several connection counts; writes (PATCH /users/me, POST
# /auth/refresh); on embedded SQLite, on PostgreSQL, and with gateway, auth
# and users as separate processes (PostgreSQL + RabbitMQ). Then a login
# storm: CLIENTS concurrent logins while a paced probe (four connections,
# about PROBE_RATE requests a second) reads /users/me.
#
#   bash benches/uncached/run.sh
#   DURATION=10s CONNECTIONS="4 16 64" MODES="embedded postgres split" \
#     STORM_CLIENTS=200 STORM_SECONDS=20 PROBE_RATE=200 bash benches/uncached/run.sh
#   STORM_ENV="FLEET_AUTH__HASHING__NICE=19" ...   # settings for the storm's fleet
#
# Nothing is pinned: the fleet, wrk (one thread) and the storm share the
# machine's cores, as they did when the tail was first measured.
# Needs PostgreSQL on 5432 and RabbitMQ on 5672 for the postgres and split
# modes; installs wrk from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-"4 16 64"}
MODES=${MODES:-"embedded postgres split"}
WRITE_CONNECTIONS=${WRITE_CONNECTIONS:-16}
STORM_CLIENTS=${STORM_CLIENTS:-200}
STORM_SECONDS=${STORM_SECONDS:-20}
PROBE_RATE=${PROBE_RATE:-200}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fleet/target}"

command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
cargo build --release -q -p fleet
fleet="$CARGO_TARGET_DIR/release/fleet"
here=benches/uncached
database="fleet_bench_$$"

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

cat >"$work/patch.lua" <<'LUA'
wrk.method = "PATCH"
wrk.body = '{"display_name":"Bench patched"}'
wrk.headers["content-type"] = "application/json"
LUA
# Every refresh spends its token and answers a new one: each answer's token
# goes back on the pile the next request takes from.
cat >"$work/refresh.lua" <<'LUA'
local pile = {}
function init(args) for i = 1, #args do pile[#pile + 1] = args[i] end end
function request()
  local token = table.remove(pile) or "none-left"
  return wrk.format("POST", "/api/v1/auth/refresh", {["content-type"] = "application/json"},
    '{"refresh_token":"' .. token .. '"}')
end
function response(status, headers, body)
  local token = body:match('"refresh_token":"([^"]+)"')
  if token then pile[#pile + 1] = token end
end
LUA
# The probe: each connection pauses between requests, so that four of them
# ask about PROBE_RATE times a second instead of as fast as they can.
cat >"$work/paced.lua" <<LUA
function delay() return $((4000 / PROBE_RATE)) end
LUA

pg_url="postgres://postgres@127.0.0.1:5432/$database"
amqp_url="amqp://guest:guest@127.0.0.1:5672/%2f"

# "mode": starts that mode's fleet; sets $base.
mode_up() {
  case "$1" in
    embedded)
      start_fleet embedded 19000
      base=https://127.0.0.1:19043
      ;;
    postgres)
      psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $database" postgres >/dev/null
      start_fleet postgres 19100 FLEET_DATABASE_URL="$pg_url"
      base=https://127.0.0.1:19143
      ;;
    split)
      psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $database" postgres >/dev/null
      psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $database" postgres >/dev/null
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -keyout "$work/key.pem" -out "$work/cert.pem" -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
      local shared=(FLEET_DATABASE_URL="$pg_url" FLEET_AMQP_URL="$amqp_url"
        FLEET_EVENTS__EXCHANGE="bench.$$.events" FLEET_EVENTS__DEAD_LETTER_EXCHANGE="bench.$$.dead"
        FLEET_STATS__QUEUE="bench.$$.stats" FLEET_TOKENS__SERVICE_SECRET="$(openssl rand -base64 32)")
      start_fleet users 19200 "${shared[@]}" FLEET_ADMIN_LISTEN=127.0.0.1:19291 -- run --target users
      start_fleet auth 19200 "${shared[@]}" FLEET_ADMIN_LISTEN=127.0.0.1:19292 -- run --target auth
      start_fleet stats 19200 "${shared[@]}" FLEET_ADMIN_LISTEN=127.0.0.1:19293 -- run --target stats
      start_fleet transfer 19200 "${shared[@]}" FLEET_ADMIN_LISTEN=127.0.0.1:19294 -- run --target transfer
      start_fleet gateway 19200 "${shared[@]}" FLEET_GATEWAY__TLS_CERT="$work/cert.pem" \
        FLEET_GATEWAY__TLS_KEY="$work/key.pem" -- run --target gateway
      base=https://127.0.0.1:19243
      ;;
  esac
}

# "key url token connections [wrk options...] [-- script args...]": one wrk
# run; appends its summary.
measure() {
  local key=$1 url=$2 token=$3 c=$4 options=()
  shift 4
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    options+=("$1")
    shift
  done
  wrk -t1 -c"$c" -d"$DURATION" --latency -H "authorization: Bearer $token" "${options[@]}" "$url" "$@" |
    wrk_summary "$key" >>"$work/results"
}

for mode in $MODES; do
  mode_up "$mode"
  token=$(login "$base")
  for _ in 1 2 3; do curl -sfk -o /dev/null -H "authorization: Bearer $token" "$base/api/v1/users"; done
  for c in $CONNECTIONS; do
    measure "$mode:hit:$c" "$base/api/v1/users" "$token" "$c"
    measure "$mode:me:$c" "$base/api/v1/users/me" "$token" "$c"
  done
  measure "$mode:patch:$WRITE_CONNECTIONS" "$base/api/v1/users/me" "$token" "$WRITE_CONNECTIONS" -s "$work/patch.lua"
  # Twice as many tokens as connections: wrk may ask for a connection's next
  # request before the answer that refills the pile has been read.
  refresh_tokens=()
  for _ in $(seq 1 $((2 * WRITE_CONNECTIONS))); do
    refresh_tokens+=("$(login_answer "$base" | python3 -c 'import json,sys; print(json.load(sys.stdin)["refresh_token"])')")
  done
  measure "$mode:refresh:$WRITE_CONNECTIONS" "$base/api/v1/auth/refresh" "$token" "$WRITE_CONNECTIONS" \
    -s "$work/refresh.lua" -- "${refresh_tokens[@]}"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
done

# --- login storm -------------------------------------------------------------
# Each storm client logs in to an account of its own (storm-N@example.com).
# shellcheck disable=SC2086 # STORM_ENV: NAME=value settings of the storm's fleet
start_fleet storm 19300 ${STORM_ENV:-}
base=https://127.0.0.1:19343
password="benchmark password"
token=$(login "$base" storm@example.com)
python3 "$here/load.py" accounts "$base" "storm-{i}@example.com" "$password" "$STORM_CLIENTS" >/dev/null
python3 "$here/load.py" cost "$base" storm@example.com "$password" 20 >"$work/cost.json"
# As many clients as hashing threads: the capacity with nothing queued.
python3 "$here/load.py" storm "$base" "storm-{i}@example.com" "$password" "$(nproc)" 10 >"$work/capacity.json"
DURATION=10s measure "storm:quiet:4" "$base/api/v1/users/me" "$token" 4 -s "$work/paced.lua"
# shellcheck disable=SC2154 # set by start_fleet
python3 "$here/load.py" storm "$base" "storm-{i}@example.com" "$password" "$STORM_CLIENTS" "$STORM_SECONDS" \
  "$pid_storm" >"$work/storm.json" &
storm=$!
sleep 2
DURATION=$((STORM_SECONDS - 4))s measure "storm:during:4" "$base/api/v1/users/me" "$token" 4 -s "$work/paced.lua"
wait "$storm"
curl -s http://127.0.0.1:19390/metrics | grep -E '^auth_password_hashes_refused_total' >"$work/refused.txt" || true

python3 - "$work" "$(nproc)" <<'PY'
import json, statistics, sys
work, cores = sys.argv[1], int(sys.argv[2])
rows = {}
for line in open(f"{work}/results"):
    key, rps, p50, p99, errors = line.split()
    mode, scenario, c = key.split(":")
    rows[(mode, scenario, int(c))] = (float(rps), float(p50), float(p99), int(errors))
probes = {s: rows.pop(("storm", s, 4)) for s in ("quiet", "during")}
names = {"hit": "cache hit GET /api/v1/users", "me": "uncached GET /api/v1/users/me",
         "patch": "PATCH /api/v1/users/me", "refresh": "POST /api/v1/auth/refresh"}
print("| mode | request | connections | req/s | p50 ms | p99 ms | non-2xx | uncached/hit |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for (mode, scenario, c), (rps, p50, p99, errors) in rows.items():
    hit = rows.get((mode, "hit", c))
    ratio = f"{rps / hit[0]:.2f}x" if scenario == "me" and hit else ""
    print(f"| {mode} | {names[scenario]} | {c} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {errors} | {ratio} |")
cost = json.load(open(f"{work}/cost.json"))
capacity = json.load(open(f"{work}/capacity.json"))
storm = json.load(open(f"{work}/storm.json"))
refused = open(f"{work}/refused.txt").read().strip()
hash_ms = cost["hash_ms"]
ideal = cores * 1000 / hash_ms
print()
print(f"one login alone: median {cost['login_median_ms']} ms, a GET /users/me {cost['read_median_ms']} ms:"
      f" one password check ~{hash_ms:.1f} ms, so the ideal is {cores} cores x {1000 / hash_ms:.1f}/s = {ideal:.1f} logins/s")
print(f"{cores} clients, nothing queued: {capacity['logins_per_s']} logins/s ({capacity['logins_per_s'] / ideal:.2f} of the ideal)")
print(f"storm: {storm}")
print(f"storm achieved/ideal: {storm['logins_per_s'] / ideal:.2f}; against {cores} clients: {storm['logins_per_s'] / capacity['logins_per_s']:.2f}")
for when, (rps, p50, p99, errors) in probes.items():
    print(f"paced GET /users/me, {when}: {rps:.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms, {errors} non-2xx")
print(f"metrics: {refused}")
PY
