#!/usr/bin/env bash
# Gateway benchmark: a cache hit on GET /api/v1/users through the gateway
# against nginx's proxy_cache serving the same answer, the same hit with
# Redis rate limiting on (a limit nothing reaches), and an uncached
# transcoded GET, over plain HTTP; then the cache hit and the uncached GET
# over HTTPS (HTTP/1.1, wrk) and HTTP/2 (h2load), each beside nginx
# terminating TLS the same way (for the uncached GET, nginx terminates TLS
# in front of the gateway's plain listener). The servers under test run on
# core 0, the load generators on core 1.
#
#   bash benches/gateway/run.sh    # ROUNDS=3 DURATION=10s CONNECTIONS=32 by default
#
# The scenarios take turns, round after round, so that a slow moment of a
# shared machine falls on one round rather than on one contender; each
# round's figures are printed, then the median of every column.
#
# Needs Redis on 127.0.0.1:6379; installs nginx, wrk and h2load from Debian
# if missing. h2load reports no percentiles: its rows give the mean and the
# maximum instead.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fleet/target}"

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
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

# shellcheck source=benches/lib.sh
source benches/lib.sh
# Each fleet: one gateway worker thread on core 0, plain HTTP served as is.
export FLEET_WRAP="taskset -c 0"
solo=(FLEET_GATEWAY__HTTP_MODE=serve FLEET_GATEWAY__THREADS=1)

# "url token": asks three times (filling the caches); fails unless 200.
warm() {
  local url=$1 token=$2 code
  for _ in 1 2 3; do
    code=$(curl -sk -o "$work/warm.json" -w '%{http_code}' -H "authorization: Bearer $token" "$url")
    if [ "$code" != 200 ]; then
      echo "warming $url answered $code: $(cat "$work/warm.json")" >&2
      exit 1
    fi
  done
}

# "key url token": warms, runs wrk, and appends "key req/s p50 p99 non-2xx"
# (latencies in ms) to the results.
measure() {
  warm "$2" "$3"
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -H "authorization: Bearer $3" "$2" |
    wrk_summary "$1" >>"$work/results"
}

# The same over HTTP/2 with h2load (one stream per connection): appends
# "key req/s mean max non-2xx", its latencies being the mean and the maximum.
measure_h2() {
  warm "$2" "$3"
  taskset -c 1 h2load -t1 -c"$CONNECTIONS" -m1 -D"${DURATION%s}" --warm-up-time=1 -H "authorization: Bearer $3" "$2" |
    awk -v key="$1" '
      function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
      /^finished in/ { rps = $4 }
      /^status codes:/ { errors = $5 + $7 + $9 }
      /^time for request:/ { min = ms($4); max = ms($5); mean = ms($6) }
      END { printf "%s %.0f %.3f %.3f %d\n", key, rps, mean, max, errors }' >>"$work/results"
}

# The gateway's own cache, no rate limiting; nginx's cache in front of it.
start_fleet plain 18000 "${solo[@]}"
plain=http://127.0.0.1:18080
plain_tls=https://127.0.0.1:18043
plain_token=$(login "$plain")
# The gateway's cache with Redis rate limiting on, at a limit never reached.
start_fleet limited 18100 "${solo[@]}" FLEET_REDIS_URL=redis://127.0.0.1:6379 FLEET_GATEWAY__RATE_LIMIT__ENABLED=true \
  FLEET_GATEWAY__RATE_LIMIT__USER__LIMIT=1000000000 FLEET_GATEWAY__RATE_LIMIT__KEY_PREFIX="bench:$$:" \
  FLEET_GATEWAY__CACHE__KEY_PREFIX="bench:$$:cache:" FLEET_GATEWAY__RATE_LIMIT__ANONYMOUS__LIMIT=1000000
limited=http://127.0.0.1:18180
limited_token=$(login "$limited")

# nginx's proxy_cache in front of the same answer (one worker, core 0).
NGINX=18081
NGINX_TLS=18444
mkdir -p "$work/nginx/cache"
# nginx's workers drop root; let them into the scratch directory.
chmod 755 "$work"
chmod -R 777 "$work/nginx"
chmod 755 "$work/plain" "$work/plain/data" "$work/plain/data/tls"
chmod 644 "$work/plain/data/tls/"*.pem
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
error_log $work/nginx/error.log crit;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  proxy_cache_path $work/nginx/cache keys_zone=fleet:10m;
  upstream gateway { server 127.0.0.1:18080; keepalive 32; }
  # A connection (HTTP/1.1 or HTTP/2) serves the whole run: by default nginx
  # closes it after 1000 requests, and h2load does not reconnect.
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:$NGINX;
    listen 127.0.0.1:$NGINX_TLS ssl http2;
    ssl_certificate $work/plain/data/tls/dev-cert.pem;
    ssl_certificate_key $work/plain/data/tls/dev-key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:tls:10m;
    location = /api/v1/users/me {
      proxy_pass http://gateway;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
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
  measure "hit_tls:$round" "$plain_tls/api/v1/users" "$plain_token"
  measure "nginx_tls:$round" "https://127.0.0.1:$NGINX_TLS/api/v1/users" "$plain_token"
  measure "me_tls:$round" "$plain_tls/api/v1/users/me" "$plain_token"
  measure "nginx_me_tls:$round" "https://127.0.0.1:$NGINX_TLS/api/v1/users/me" "$plain_token"
  measure_h2 "hit_h2:$round" "$plain_tls/api/v1/users" "$plain_token"
  measure_h2 "nginx_h2:$round" "https://127.0.0.1:$NGINX_TLS/api/v1/users" "$plain_token"
  measure_h2 "me_h2:$round" "$plain_tls/api/v1/users/me" "$plain_token"
  measure_h2 "nginx_me_h2:$round" "https://127.0.0.1:$NGINX_TLS/api/v1/users/me" "$plain_token"
done

python3 - "$work/results" <<'PY'
import statistics, sys
names = {
    "hit": "gateway: cache hit GET /api/v1/users",
    "nginx": "nginx: proxy_cache hit, same answer",
    "limited": "gateway: cache hit + Redis rate limiting",
    "uncached": "gateway: uncached transcoded GET /users/me",
    "hit_tls": "HTTPS/1.1 gateway: cache hit",
    "nginx_tls": "HTTPS/1.1 nginx: proxy_cache hit",
    "me_tls": "HTTPS/1.1 gateway: uncached /users/me",
    "nginx_me_tls": "HTTPS/1.1 nginx TLS -> gateway HTTP: /users/me",
    "hit_h2": "HTTP/2 gateway: cache hit (mean, max)",
    "nginx_h2": "HTTP/2 nginx: proxy_cache hit (mean, max)",
    "me_h2": "HTTP/2 gateway: uncached /users/me (mean, max)",
    "nginx_me_h2": "HTTP/2 nginx TLS -> gateway HTTP: /users/me (mean, max)",
}
runs = {}
for line in open(sys.argv[1]):
    key, rps, p50, p99, errors = line.split()
    runs.setdefault(key.split(":")[0], []).append((float(rps), float(p50), float(p99), int(errors)))
print(f"| {'scenario':<54} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | rounds (req/s, p99 ms) |")
print(f"|{'-' * 56}|{'-' * 10}:|{'-' * 9}:|{'-' * 9}:|{'-' * 24}|")
medians = {}
for key, name in names.items():
    rows = runs[key]
    med = [statistics.median(r[i] for r in rows) for i in range(3)]
    medians[key] = med
    rounds = ", ".join(f"{r[0]:.0f} ({r[2]:.2f})" for r in rows)
    errors = sum(r[3] for r in rows)
    note = f"; {errors} non-2xx" if errors else ""
    print(f"| {name:<54} | {med[0]:>8.0f} | {med[1]:>7.3f} | {med[2]:>7.3f} | {rounds}{note} |")
hit, nginx, limited = medians["hit"], medians["nginx"], medians["limited"]
print()
print(f"cache hit against nginx: {hit[0] / nginx[0]:.2f}x the requests/s, p99 {hit[2]:.3f} ms against {nginx[2]:.3f} ms")
print(f"Redis rate limiting costs {100 * (1 - limited[0] / hit[0]):.1f} % of the cache hit's requests/s")
for proto in ("tls", "h2"):
    hit, nginx = medians[f"hit_{proto}"], medians[f"nginx_{proto}"]
    me, nginx_me = medians[f"me_{proto}"], medians[f"nginx_me_{proto}"]
    if min(hit[0], nginx[0], me[0], nginx_me[0]) == 0:
        print(f"{proto}: a scenario answered nothing; see its rows")
        continue
    print(f"{proto}: cache hit {hit[0] / nginx[0]:.2f}x nginx's requests/s; uncached {me[0] / hit[0]:.2f}x the hit,"
          f" {me[0] / nginx_me[0]:.2f}x nginx terminating TLS in front")
PY
