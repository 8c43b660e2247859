# shellcheck shell=bash disable=SC2154
# Shared by the benchmark scripts: sourced, not run. Expects $fleet (the
# binary), $work (a scratch directory) and the array pids=() to exist.

# "name port-base [NAME=value...] [-- fleet args...]": a fleet whose
# listeners sit at port-base+43 (HTTPS), +80 (HTTP), +90 (admin), +51 (auth),
# +52 (users), +53 (stats) and +54 (transfer); NAME=value pairs are added to its environment. The server
# is wrapped in $FLEET_WRAP (e.g. "taskset -c 0") when set. Waits until
# /health answers on HTTP (HTTPS when the gateway redirects).
start_fleet() {
  local name=$1 p=$2 args=(run) envs=()
  shift 2
  while [ $# -gt 0 ]; do
    if [ "$1" = -- ]; then
      shift
      args=("$@")
      break
    fi
    envs+=("$1")
    shift
  done
  mkdir -p "$work/$name"
  # shellcheck disable=SC2086 # FLEET_WRAP is a command line of its own
  env -i PATH="$PATH" HOME="$HOME" \
    FLEET_DATA_DIR="$work/$name/data" FLEET_LOG__LEVEL=error \
    FLEET_AUTH__LISTEN=127.0.0.1:$((p + 51)) FLEET_AUTH__URL=http://127.0.0.1:$((p + 51)) \
    FLEET_USERS__LISTEN=127.0.0.1:$((p + 52)) FLEET_USERS__URL=http://127.0.0.1:$((p + 52)) \
    FLEET_STATS__LISTEN=127.0.0.1:$((p + 53)) FLEET_STATS__URL=http://127.0.0.1:$((p + 53)) \
    FLEET_TRANSFER__LISTEN=127.0.0.1:$((p + 54)) FLEET_TRANSFER__URL=http://127.0.0.1:$((p + 54)) \
    FLEET_GATEWAY__HTTP_LISTEN=127.0.0.1:$((p + 80)) FLEET_GATEWAY__HTTPS_LISTEN=127.0.0.1:$((p + 43)) \
    FLEET_ADMIN_LISTEN=127.0.0.1:$((p + 90)) FLEET_GATEWAY__RATE_LIMIT__ENABLED=false \
    "${envs[@]}" ${FLEET_WRAP:-} "$fleet" "${args[@]}" >"$work/$name/fleet.log" 2>&1 &
  pids+=($!)
  eval "pid_$name=$!"
  local target="" i
  for ((i = 0; i < ${#args[@]}; i++)); do
    [ "${args[$i]}" = --target ] && target=${args[$((i + 1))]}
  done
  for _ in $(seq 1 150); do
    case "$target" in
      auth | users | stats | transfer)
        # A gRPC port that accepts connections is enough here.
        local port=$((p + 51))
        [ "$target" = users ] && port=$((p + 52))
        [ "$target" = stats ] && port=$((p + 53))
        [ "$target" = transfer ] && port=$((p + 54))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        ;;
      *)
        curl -sfk "https://127.0.0.1:$((p + 43))/health" >/dev/null && return 0
        curl -sf "http://127.0.0.1:$((p + 80))/health" >/dev/null && return 0
        ;;
    esac
    sleep 0.1
  done
  echo "the fleet $name did not start:" >&2
  cat "$work/$name/fleet.log" >&2
  exit 1
}

# "base-url [email]": registers (once) and logs in; prints the login answer.
login_answer() {
  local email=${2:-bench@example.com}
  curl -sfk "$1/api/v1/auth/register" -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"benchmark password\",\"display_name\":\"Bench\"}" >/dev/null || true
  curl -sfk "$1/api/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"benchmark password\"}"
}

# "base-url [email]": an access token.
login() {
  login_answer "$@" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}

# Reads wrk's report on stdin; prints "key req/s p50 p99 non-2xx" (ms).
wrk_summary() {
  awk -v key="$1" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ { rps = $2 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    /Non-2xx/ { errors = $5 }
    END { printf "%s %.0f %.3f %.3f %d\n", key, rps, p50, p99, errors }'
}

# "queue...": deletes the RabbitMQ queues a run declared, each with its
# `.dead` queue, when rabbitmqctl is at hand: a shared queue outlives its
# consumers, and a quorum queue left behind keeps processes of its own.
delete_queues() {
  command -v rabbitmqctl >/dev/null || return 0
  local queue
  for queue in "$@"; do
    timeout 30 rabbitmqctl -q delete_queue "$queue" >/dev/null 2>&1 || true
    timeout 30 rabbitmqctl -q delete_queue "$queue.dead" >/dev/null 2>&1 || true
  done
}
