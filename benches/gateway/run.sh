#!/usr/bin/env bash
# Gateway benchmark: a cache hit on GET /api/v1/users through the gateway
# against nginx's proxy_cache serving the same answer, the same hit with
# Redis rate limiting on (a limit nothing reaches), and an uncached
# transcoded GET. The server under test runs on core 0, wrk on core 1.
#
#   bash benches/gateway/run.sh            # DURATION=10s CONNECTIONS=32 by default
#
# Needs Redis on 127.0.0.1:6379; installs nginx and wrk from Debian if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

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

GW=18080 NGINX=18081
base=http://127.0.0.1:$GW

start_fleet() { # extra environment as NAME=value arguments
  env -i PATH="$PATH" HOME="$HOME" \
    FLEET_DATA_DIR="$work/data" FLEET_LOG__LEVEL=error \
    FLEET_AUTH__LISTEN=127.0.0.1:18051 FLEET_AUTH__URL=http://127.0.0.1:18051 \
    FLEET_USERS__LISTEN=127.0.0.1:18052 FLEET_USERS__URL=http://127.0.0.1:18052 \
    FLEET_GATEWAY__HTTP_LISTEN=127.0.0.1:$GW FLEET_GATEWAY__HTTPS_LISTEN=127.0.0.1:18443 \
    FLEET_GATEWAY__HTTP_MODE=serve FLEET_GATEWAY__THREADS=1 FLEET_ADMIN_LISTEN=127.0.0.1:18090 \
    "$@" taskset -c 0 "$fleet" run >"$work/fleet.log" 2>&1 &
  fleet_pid=$!
  pids+=("$fleet_pid")
  for _ in $(seq 1 100); do
    curl -sf "$base/health" >/dev/null && return 0
    sleep 0.1
  done
  echo "the fleet did not start:" >&2
  cat "$work/fleet.log" >&2
  exit 1
}

stop_fleet() {
  kill "$fleet_pid" 2>/dev/null || true
  wait "$fleet_pid" 2>/dev/null || true
}

login() {
  curl -sf "$base/api/v1/auth/register" -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","password":"benchmark password","display_name":"Bench"}' >/dev/null || true
  curl -sf "$base/api/v1/auth/login" -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","password":"benchmark password"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}

# "name url": prints requests/s, p50 and p99 (ms) as one table row.
measure() {
  local name=$1 url=$2
  local code
  for _ in 1 2 3; do # warm the caches
    code=$(curl -s -o "$work/warm.json" -w '%{http_code}' -H "authorization: Bearer $TOKEN" "$url")
    if [ "$code" != 200 ]; then
      echo "warming $url answered $code: $(cat "$work/warm.json")" >&2
      exit 1
    fi
  done
  local out
  out=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -H "authorization: Bearer $TOKEN" "$url")
  local rps p50 p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  printf '| %-44s | %10s | %8s | %8s | %s\n' "$name" "$rps" "$p50" "$p99" "${errors:-0} non-2xx"
}

printf '| %-44s | %10s | %8s | %8s |\n' scenario "req/s" p50 p99
printf '|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..46})" "------------" "----------" "----------"

# 1. The gateway's own cache, no rate limiting.
start_fleet FLEET_GATEWAY__RATE_LIMIT__ENABLED=false
TOKEN=$(login)
measure "gateway: cache hit GET /api/v1/users" "$base/api/v1/users"
measure "gateway: uncached transcoded GET /users/me" "$base/api/v1/users/me"

# 2. nginx's proxy_cache in front of the same answer (one worker, core 0).
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
  upstream gateway { server 127.0.0.1:$GW; keepalive 32; }
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
measure "nginx: proxy_cache hit GET /api/v1/users" "http://127.0.0.1:$NGINX/api/v1/users"
stop_fleet

# 3. The gateway's cache with Redis rate limiting on, at a limit never reached.
start_fleet FLEET_REDIS_URL=redis://127.0.0.1:6379 FLEET_GATEWAY__RATE_LIMIT__ENABLED=true \
  FLEET_GATEWAY__RATE_LIMIT__USER__LIMIT=1000000000 FLEET_GATEWAY__RATE_LIMIT__KEY_PREFIX="bench:$$:" \
  FLEET_GATEWAY__CACHE__KEY_PREFIX="bench:$$:cache:" FLEET_GATEWAY__RATE_LIMIT__ANONYMOUS__LIMIT=1000000
TOKEN=$(login)
measure "gateway: cache hit + Redis rate limit" "$base/api/v1/users"
stop_fleet
