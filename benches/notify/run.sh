#!/usr/bin/env bash
# The notify service on PostgreSQL and RabbitMQ: how fast events become
# notifications, and how fast webhooks go out.
#
#   bash benches/notify/run.sh
#   EVENTS=100000 DELIVERIES=50000 WAITING=100000 bash benches/notify/run.sh
#
# Fan-out: notify (`fleet run --target notify`) declares its durable queue
# and stops; EVENTS `password.changed` events for 1 000 users are published
# into it; notify starts again, and the time until every notification is in
# the store gives events/s (each a notification and its unread count, in
# batches of up to 64 per transaction).
#
# Webhooks: with notify stopped, the 1 000 users get a webhook URL on a local
# nginx that answers 204; WAITING deliveries are queued due in an hour
# (attempts waiting for their retry) and DELIVERIES due now, as notify
# writes them. notify starts, and the time from the first to the last
# delivered attempt gives deliveries/s (each signed, posted over keep-alive
# HTTP and its outcome written back in batches); its RSS is read as it
# starts and at the end.
#
# Needs PostgreSQL on 5432 and RabbitMQ on 5672; installs nginx-light from
# Debian and pika into a scratch venv when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

EVENTS=${EVENTS:-100000}
DELIVERIES=${DELIVERIES:-50000}
WAITING=${WAITING:-100000}
USERS=1000
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fleet/target}"

command -v nginx >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
cargo build --release -q -p fleet
fleet="$CARGO_TARGET_DIR/release/fleet"
database="fleet_bench_notify_$$"
pg_url="postgres://postgres@127.0.0.1:5432/$database"
amqp_url="amqp://guest:guest@127.0.0.1:5672/%2f"
exchange="bench.$$.events"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -f "$work/nginx.pid" ]; then kill "$(cat "$work/nginx.pid")" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $database" postgres >/dev/null 2>&1 || true
  delete_queues "bench.$$.notify" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=benches/lib.sh
source benches/lib.sh
sql() { psql -q -t -A -h 127.0.0.1 -U postgres -d "$database" -c "$1"; }
rss_mb() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check pika
psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $database" postgres >/dev/null
publish() { "$work/venv/bin/python" benches/stats/publish.py "$amqp_url" "$exchange" "$1" "$USERS" password.changed; }

notify_env=(FLEET_DATABASE_URL="$pg_url" FLEET_AMQP_URL="$amqp_url"
  FLEET_EVENTS__EXCHANGE="$exchange" FLEET_EVENTS__DEAD_LETTER_EXCHANGE="bench.$$.dead"
  FLEET_NOTIFY__QUEUE="bench.$$.notify" FLEET_NOTIFY__LISTEN=127.0.0.1:19355
  FLEET_NOTIFY__WEBHOOKS__ALLOW_HTTP=true FLEET_NOTIFY__WEBHOOKS__ALLOW_PRIVATE_NETWORKS=true
  FLEET_ADMIN_LISTEN=127.0.0.1:19391)
# A gRPC port that accepts connections is enough here.
start_notify() {
  mkdir -p "$work/notify"
  env -i PATH="$PATH" HOME="$HOME" FLEET_DATA_DIR="$work/notify/data" FLEET_LOG__LEVEL=error \
    "${notify_env[@]}" "$fleet" run --target notify >>"$work/notify/fleet.log" 2>&1 &
  pids+=($!)
  pid_notify=$!
  for _ in $(seq 1 150); do
    (exec 3<>/dev/tcp/127.0.0.1/19355) 2>/dev/null && return 0
    sleep 0.1
  done
  cat "$work/notify/fleet.log" >&2
  exit 1
}

# --- fan-out -----------------------------------------------------------------
start_notify
sleep 1 # the queue is declared and bound
kill "$pid_notify"
wait "$pid_notify" 2>/dev/null || true
publish "$EVENTS"
started=$(date +%s.%N)
start_notify
while [ "$(sql 'SELECT COUNT(*) FROM notify.notifications')" -lt "$EVENTS" ]; do sleep 0.2; done
ended=$(date +%s.%N)
fanout=$(python3 -c "print(f'{$EVENTS / ($ended - $started):.0f}')")
unread=$(sql 'SELECT SUM(unread) FROM notify.accounts')
echo "fan-out: $EVENTS events in $(python3 -c "print(f'{$ended - $started:.1f}')") s: $fanout events/s (unread counted: $unread)"

# --- webhooks ----------------------------------------------------------------
kill "$pid_notify"
wait "$pid_notify" 2>/dev/null || true
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000;
  client_body_temp_path $work;
  server { listen 127.0.0.1:19380; location / { return 204; } }
}
CONF
nginx -c "$work/nginx.conf"
sql "UPDATE notify.accounts SET webhook_url = 'http://127.0.0.1:19380/hook',
       webhook_secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'" >/dev/null
now_us=$(($(date +%s) * 1000000))
# A delivery as notify writes one: the notification's webhook body.
payload="'{\"type\":\"notification.password_changed\",\"timestamp\":\"2026-12-02T10:00:00Z\",\"data\":{\"id\":\"' || n::text || '\",\"user_id\":\"' || u::text || '\",\"kind\":\"password_changed\",\"title\":\"Your password was changed\",\"body\":\"Your password was changed and your other sessions were ended. If this was not you, reset your password at once.\",\"details\":{\"sessions_revoked\":1}}}'"
queue() { # count, attempts made, due (µs)
  sql "INSERT INTO notify.deliveries (id, user_id, notification_id, channel, payload, status, attempts, created_us, next_attempt_us)
       SELECT gen_random_uuid(), u, n, 'webhook', $payload, 'pending', $2, $now_us, $3
       FROM (SELECT md5((g % $USERS)::text)::uuid AS u, gen_random_uuid() AS n FROM generate_series(1, $1) g) s" >/dev/null
}
queue "$WAITING" 1 $((now_us + 3600 * 1000000))
queue "$DELIVERIES" 0 "$now_us"
start_notify
rss_start=$(rss_mb "$pid_notify")
count_delivered() { sql "SELECT COUNT(*) FROM notify.deliveries WHERE status = 'delivered'"; }
while [ "$(count_delivered)" -lt "$DELIVERIES" ]; do sleep 0.2; done
rss_end=$(rss_mb "$pid_notify")
read -r first last <<<"$(sql "SELECT MIN(last_attempt_us), MAX(last_attempt_us) FROM notify.deliveries WHERE status = 'delivered'" | tr '|' ' ')"
seconds=$(python3 -c "print(f'{($last - $first) / 1e6:.1f}')")
rate=$(python3 -c "print(f'{$DELIVERIES / (($last - $first) / 1e6):.0f}')")
waiting=$(sql "SELECT COUNT(*) FROM notify.deliveries WHERE status = 'pending'")
echo "webhooks: $DELIVERIES delivered in $seconds s: $rate deliveries/s; $waiting waiting for their retry; notify RSS $rss_start MB at start, $rss_end MB at the end"
