"""Load for the uncached-path benchmark, over HTTPS with keep-alive.

  load.py storm BASE EMAIL PASSWORD CLIENTS SECONDS [PID]
      CLIENTS logins at once, each again as soon as it is answered; a 503
      waits for its Retry-After, as a well-behaved client does. Client i
      uses its own account: EMAIL with {i} replaced. With PID, that
      process's resident memory is sampled.
  load.py accounts BASE EMAIL PASSWORD COUNT
      Registers the storm's COUNT accounts, a few at a time.
  load.py cost BASE EMAIL PASSWORD COUNT
      COUNT logins one after another, then COUNT reads of /api/v1/users/me
      on the same connection: a login's cost beyond a round trip is one
      password check's.

Each prints one JSON object.
"""

import http.client
import json
import ssl
import statistics
import sys
import threading
import time
from urllib.parse import urlsplit

CONTEXT = ssl._create_unverified_context()  # the development certificate


def connect(url):
    parts = urlsplit(url)
    return http.client.HTTPSConnection(parts.hostname, parts.port, context=CONTEXT, timeout=30)


def request(conn, method, path, headers, body=None):
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    return response.status, response.getheader("retry-after"), data


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def ms(seconds):
    return None if seconds is None else round(seconds * 1000, 3)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def register(conn, email, password):
    body = json.dumps({"email": email, "password": password, "display_name": "Storm"})
    while True:
        status, retry_after, data = request(conn, "POST", "/api/v1/auth/register", {"content-type": "application/json"}, body)
        if status in (201, 409):
            return
        if status != 503:
            raise SystemExit(f"registering {email} answered {status}: {data[:200]!r}")
        time.sleep(float(retry_after or 1))


def storm(base, email, password, clients, seconds, pid=None):
    headers = {"content-type": "application/json"}
    lock = threading.Lock()
    served, refused, other, refusal_latency, rss = [], [0], [], [], [0]
    go = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def run(i):
        conn = connect(base)
        mine = email.replace("{i}", str(i))
        body = json.dumps({"email": mine, "password": password})
        go.wait()
        while time.monotonic() < stop_at[0]:
            began = time.monotonic()
            try:
                status, retry_after, _ = request(conn, "POST", "/api/v1/auth/login", headers, body)
            except (OSError, http.client.HTTPException) as err:
                status, retry_after = repr(err), None
                conn = connect(base)
            took = time.monotonic() - began
            with lock:
                if status == 200:
                    served.append(took)
                elif status == 503:
                    refused[0] += 1
                    refusal_latency.append(took)
                else:
                    other.append(status)
            if status == 503:
                time.sleep(float(retry_after or 1))

    def sample():
        while time.monotonic() < stop_at[0]:
            rss[0] = max(rss[0], rss_kib(pid))
            time.sleep(0.2)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.monotonic() + 3600  # until every client is connected
    go.wait()
    began = time.monotonic()
    stop_at[0] = began + seconds
    if pid:
        threading.Thread(target=sample, daemon=True).start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    return {
        "logins": len(served),
        "logins_per_s": round(len(served) / elapsed, 1),
        "refused_503": refused[0],
        "other_answers": len(other),
        "other_examples": sorted(set(map(str, other)))[:5],
        "login_p50_ms": ms(percentile(served, 50)),
        "login_p99_ms": ms(percentile(served, 99)),
        "login_max_ms": ms(max(served, default=None)),
        "refusal_p99_ms": ms(percentile(refusal_latency, 99)),
        "refusal_max_ms": ms(max(refusal_latency, default=None)),
        "max_rss_mib": round(rss[0] / 1024, 1) if pid else None,
    }


def accounts(base, email, password, count):
    todo = list(range(count))
    lock = threading.Lock()

    def run():
        conn = connect(base)
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            register(conn, email.replace("{i}", str(i)), password)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"accounts": count}


def cost(base, email, password, count):
    conn = connect(base)
    body = json.dumps({"email": email, "password": password})
    logins, reads = [], []
    for _ in range(count):
        began = time.monotonic()
        status, _, data = request(conn, "POST", "/api/v1/auth/login", {"content-type": "application/json"}, body)
        logins.append(time.monotonic() - began)
        if status != 200:
            raise SystemExit(f"login answered {status}: {data[:200]!r}")
    headers = {"authorization": f"Bearer {json.loads(data)['access_token']}"}
    for _ in range(count):
        began = time.monotonic()
        status, _, data = request(conn, "GET", "/api/v1/users/me", headers)
        reads.append(time.monotonic() - began)
        if status != 200:
            raise SystemExit(f"GET /users/me answered {status}: {data[:200]!r}")
    login, read = statistics.median(logins), statistics.median(reads)
    return {"login_median_ms": ms(login), "read_median_ms": ms(read), "hash_ms": ms(login - read)}


def main(argv):
    mode, args = argv[1], argv[2:]
    if mode == "storm":
        base, email, password, clients, seconds, *pid = args
        result = storm(base, email, password, int(clients), float(seconds), int(pid[0]) if pid else None)
    elif mode == "accounts":
        base, email, password, count = args
        result = accounts(base, email, password, int(count))
    elif mode == "cost":
        base, email, password, count = args
        result = cost(base, email, password, int(count))
    else:
        raise SystemExit(__doc__)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)
