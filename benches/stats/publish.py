"""Publishes COUNT `auth.login_failed` events for USERS users to a Fleet
exchange, as the outbox relay would: protobuf `fleet.events.v1.Event`
bodies, persistent, with publisher confirms. The encoding is written out
by hand (a few fields) so the benchmark needs only pika.

    python publish.py AMQP_URL EXCHANGE COUNT USERS
"""

import sys
import time
import uuid

import pika


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, payload):
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def int_field(number, n):
    return varint(number << 3) + varint(n)


def event(user, now_ns):
    seconds, nanos = divmod(now_ns, 1_000_000_000)
    failed = (
        field(1, b"bad_password")
        + field(2, b"192.0.2.1")
        + field(3, b"bench")
        + int_field(4, 1)
    )
    return (
        field(1, str(uuid.uuid4()).encode())
        + field(2, b"auth.login_failed")
        + field(3, int_field(1, seconds) + int_field(2, nanos))
        + field(4, user.encode())
        + field(6, b"bench")
        + field(21, failed)
    )


def main():
    url, exchange, count, users = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ids = [str(uuid.uuid4()) for _ in range(users)]
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2, content_type="application/x-protobuf")
    started = time.monotonic()
    for i in range(count):
        body = event(ids[i % users], time.time_ns())
        channel.basic_publish(exchange, "auth.login_failed", body, props)
    elapsed = time.monotonic() - started
    connection.close()
    print(f"published {count} in {elapsed:.1f} s ({count / elapsed:.0f}/s)", file=sys.stderr)


if __name__ == "__main__":
    main()
