"""A soak's load: a fixed rate of mixed requests through the gateway, over
HTTPS with keep-alive, and each minute's figures.

  load.py BASE RATE SECONDS PID ACCOUNTS

RATE requests per second in all, for SECONDS, scheduled at fixed instants
(a late request is measured from when it was due, so that a stall shows in
the latency instead of hiding in a slower rate). The mix: 10 % registrations,
10 % logins, 20 % profile updates (PATCH /users/me), 60 % reads
(/users/me, /stats/user, /notifications in turn). ACCOUNTS accounts are
registered and signed in first. Each minute prints one JSON line: requests,
failures (anything but the expected status; by kind and status), p50/p99/max
latency, and the process PID's resident memory and open file descriptors.
"""

import http.client
import json
import os
import queue
import ssl
import sys
import threading
import time
import uuid
from urllib.parse import urlsplit

CONTEXT = ssl._create_unverified_context()  # the development certificate
PASSWORD = "correct horse battery staple"
WORKERS = 16
READS = ["/api/v1/users/me", "/api/v1/stats/user", "/api/v1/notifications?limit=20"]


def connect(base):
    parts = urlsplit(base)
    return http.client.HTTPSConnection(parts.hostname, parts.port, context=CONTEXT, timeout=30)


def call(conn, method, path, token=None, body=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    response = conn.getresponse()
    data = response.read()
    return response.status, data


def register_and_login(conn, email):
    call(conn, "POST", "/api/v1/auth/register", body={"email": email, "password": PASSWORD, "display_name": "Soak"})
    status, data = call(conn, "POST", "/api/v1/auth/login", body={"email": email, "password": PASSWORD})
    assert status == 200, (status, data)
    return json.loads(data)["access_token"]


def process_figures(pid):
    rss_kb = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    return round(rss_kb / 1024, 1), len(os.listdir(f"/proc/{pid}/fd"))


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] if values else None


def main():
    base, rate, seconds, pid, accounts = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    run = uuid.uuid4().hex[:8]
    setup = connect(base)
    tokens = [register_and_login(setup, f"soak-{run}-{i}@example.com") for i in range(accounts)]
    jobs = queue.Queue()
    lock = threading.Lock()
    samples = []  # (due, latency, failure: None or "kind status")

    def work():
        conn = connect(base)
        while True:
            job = jobs.get()
            if job is None:
                return
            due, n = job
            token = tokens[n % len(tokens)]
            kind = n % 10
            try:
                if kind == 0:
                    name, status, _ = "register", *call(conn, "POST", "/api/v1/auth/register", body={
                        "email": f"soak-{run}-new-{n}@example.com", "password": PASSWORD, "display_name": "New"})
                    expected = 201
                elif kind == 1:
                    name, status, _ = "login", *call(conn, "POST", "/api/v1/auth/login", body={
                        "email": f"soak-{run}-{n % len(tokens)}@example.com", "password": PASSWORD})
                    expected = 200
                elif kind in (2, 3):
                    name, status, _ = "update", *call(conn, "PATCH", "/api/v1/users/me", token, {"display_name": f"Soak {n}"})
                    expected = 200
                else:
                    name, status, _ = "read", *call(conn, "GET", READS[n % len(READS)], token)
                    expected = 200
                failure = None if status == expected else f"{name} {status}"
            except (OSError, http.client.HTTPException) as err:
                conn.close()
                conn = connect(base)
                failure = f"connection {type(err).__name__}"
            with lock:
                samples.append((due, time.monotonic() - due, failure))

    threads = [threading.Thread(target=work, daemon=True) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    start = time.monotonic()
    interval = 1.0 / rate
    n = 0
    next_report = start + 60
    minute = 0

    def report(upto):
        nonlocal minute
        with lock:
            window = [s for s in samples if s[0] < upto]
            samples[:] = [s for s in samples if s[0] >= upto]
        latencies = [s[1] for s in window]
        rss_mb, fds = process_figures(pid)
        minute += 1
        print(json.dumps({
            "minute": minute,
            "requests": len(window),
            "failed": sum(1 for s in window if s[2]),
            "failures": sorted({s[2] for s in window if s[2]}),
            "p50_ms": round(percentile(latencies, 50) * 1000, 2) if latencies else None,
            "p99_ms": round(percentile(latencies, 99) * 1000, 2) if latencies else None,
            "max_ms": round(max(latencies) * 1000, 2) if latencies else None,
            "rss_mb": rss_mb,
            "open_fds": fds,
        }), flush=True)

    while True:
        due = start + n * interval
        now = time.monotonic()
        if due >= start + seconds:
            break
        if now >= next_report:
            report(next_report)
            next_report += 60
        if due > now:
            time.sleep(due - now)
        jobs.put((due, n))
        n += 1
    for _ in threads:
        jobs.put(None)
    for thread in threads:
        thread.join()
    report(float("inf"))


if __name__ == "__main__":
    main()
