#!/usr/bin/env bash
# Gateway benchmark: a cache hit on GET /api/v1/users through the gateway
# against nginx's proxy_cache serving the same answer, the same hit with
# Redis rate limiting on (a limit nothing reaches), and an uncached
# transcoded GET. The servers under test run on core 0, wrk on core 1.
#
#   bash benches/gateway/run.sh    # ROUNDS=3 DURATION=10s CONNECTIONS=32 by default
#
# The scenarios take turns, round after round, so that a slow moment of a
# shared machine falls on one round rather than on one contender; each
# round's figures are printed, then the median of every column.
#
# Needs Redis on 127.0.0.1:6379; installs nginx and wrk from Debian if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fleet/target}"

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q -p fleet
fleet="$CARGO_TARGET_DIR/release/fleet"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# "name port-base [NAME=value...]": a fleet whose gateway serves plain HTTP
# on port-base+80 with one worker thread; its other listeners sit beside it.
start_fleet() {
  local name=$1 p=$2
  shift 2
  mkdir -p "$work/$name"
  env -i PATH="$PATH" HOME="$HOME" \
    FLEET_DATA_DIR="$work/$name/data" FLEET_LOG__LEVEL=error \
    FLEET_AUTH__LISTEN=127.0.0.1:$((p + 51)) FLEET_AUTH__URL=http://127.0.0.1:$((p + 51)) \
    FLEET_USERS__LISTEN=127.0.0.1:$((p + 52)) FLEET_USERS__URL=http://127.0.0.1:$((p + 52)) \
    FLEET_GATEWAY__HTTP_LISTEN=127.0.0.1:$((p + 80)) FLEET_GATEWAY__HTTPS_LISTEN=127.0.0.1:$((p + 43)) \
    FLEET_GATEWAY__HTTP_MODE=serve FLEET_GATEWAY__THREADS=1 FLEET_ADMIN_LISTEN=127.0.0.1:$((p + 90)) \
    "$@" taskset -c 0 "$fleet" run >"$work/$name/fleet.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$((p + 80))/health" >/dev/null && return 0
    sleep 0.1
  done
  echo "the fleet $name did not start:" >&2
  cat "$work/$name/fleet.log" >&2
  exit 1
}

login() { # base URL; prints an access token
  curl -sf "$1/api/v1/auth/register" -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","password":"benchmark password","display_name":"Bench"}' >/dev/null || true
  curl -sf "$1/api/v1/auth/login" -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","password":"benchmark password"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}

# "key url token": warms the caches, runs wrk, and appends
# "key req/s p50 p99 non-2xx" (latencies in ms) to the results.
measure() {
  local key=$1 url=$2 token=$3 code
  for _ in 1 2 3; do
    code=$(curl -s -o "$work/warm.json" -w '%{http_code}' -H "authorization: Bearer $token" "$url")
    if [ "$code" != 200 ]; then
      echo "warming $url answered $code: $(cat "$work/warm.json")" >&2
      exit 1
    fi
  done
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -H "authorization: Bearer $token" "$url" |
    awk -v key="$key" '
      function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
      /Requests\/sec/ { rps = $2 }
      $1 == "50%" { p50 = ms($2) }
      $1 == "99%" { p99 = ms($2) }
      /Non-2xx/ { errors = $5 }
      END { printf "%s %.0f %.3f %.3f %d\n", key, rps, p50, p99, errors }' >>"$work/results"
}

# The gateway's own cache, no rate limiting; nginx's cache in front of it.
start_fleet plain 18000 FLEET_GATEWAY__RATE_LIMIT__ENABLED=false
plain=http://127.0.0.1:18080
plain_token=$(login "$plain")
# The gateway's cache with Redis rate limiting on, at a limit never reached.
start_fleet limited 18100 FLEET_REDIS_URL=redis://127.0.0.1:6379 FLEET_GATEWAY__RATE_LIMIT__ENABLED=true \
  FLEET_GATEWAY__RATE_LIMIT__USER__LIMIT=1000000000 FLEET_GATEWAY__RATE_LIMIT__KEY_PREFIX="bench:$$:" \
  FLEET_GATEWAY__CACHE__KEY_PREFIX="bench:$$:cache:" FLEET_GATEWAY__RATE_LIMIT__ANONYMOUS__LIMIT=1000000
limited=http://127.0.0.1:18180
limited_token=$(login "$limited")

# nginx's proxy_cache in front of the same answer (one worker, core 0).
NGINX=18081
mkdir -p "$work/nginx/cache"
# nginx's workers drop root; let them into the scratch directory.
chmod 755 "$work"
chmod -R 777 "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
error_log $work/nginx/error.log crit;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  proxy_cache_path $work/nginx/cache keys_zone=fleet:10m;
  upstream gateway { server 127.0.0.1:18080; keepalive 32; }
  server {
    listen 127.0.0.1:$NGINX;
    location / {
      proxy_pass http://gateway;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache fleet;
      proxy_cache_key "\$request_uri \$http_authorization";
      proxy_cache_valid 200 5m;
      proxy_ignore_headers Cache-Control Expires Set-Cookie;
    }
  }
}
CONF
taskset -c 0 nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -g 'daemon off;' &
pids+=($!)
for _ in $(seq 1 50); do
  curl -s -o /dev/null "http://127.0.0.1:$NGINX/health" && break
  sleep 0.1
done

for round in $(seq 1 "$ROUNDS"); do
  measure "hit:$round" "$plain/api/v1/users" "$plain_token"
  measure "nginx:$round" "http://127.0.0.1:$NGINX/api/v1/users" "$plain_token"
  measure "limited:$round" "$limited/api/v1/users" "$limited_token"
  measure "uncached:$round" "$plain/api/v1/users/me" "$plain_token"
done

python3 - "$work/results" <<'PY'
import statistics, sys
names = {
    "hit": "gateway: cache hit GET /api/v1/users",
    "nginx": "nginx: proxy_cache hit, same answer",
    "limited": "gateway: cache hit + Redis rate limiting",
    "uncached": "gateway: uncached transcoded GET /users/me",
}
runs = {}
for line in open(sys.argv[1]):
    key, rps, p50, p99, errors = line.split()
    runs.setdefault(key.split(":")[0], []).append((float(rps), float(p50), float(p99), int(errors)))
print(f"| {'scenario':<44} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | rounds (req/s, p99 ms) |")
print(f"|{'-' * 46}|{'-' * 10}:|{'-' * 9}:|{'-' * 9}:|{'-' * 24}|")
medians = {}
for key, name in names.items():
    rows = runs[key]
    med = [statistics.median(r[i] for r in rows) for i in range(3)]
    medians[key] = med
    rounds = ", ".join(f"{r[0]:.0f} ({r[2]:.2f})" for r in rows)
    errors = sum(r[3] for r in rows)
    note = f"; {errors} non-2xx" if errors else ""
    print(f"| {name:<44} | {med[0]:>8.0f} | {med[1]:>7.3f} | {med[2]:>7.3f} | {rounds}{note} |")
hit, nginx, limited = medians["hit"], medians["nginx"], medians["limited"]
print()
print(f"cache hit against nginx: {hit[0] / nginx[0]:.2f}x the requests/s, p99 {hit[2]:.3f} ms against {nginx[2]:.3f} ms")
print(f"Redis rate limiting costs {100 * (1 - limited[0] / hit[0]):.1f} % of the cache hit's requests/s")
PY
