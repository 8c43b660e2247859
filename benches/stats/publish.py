"""Publishes COUNT events of one KIND (`auth.login_failed`, the default, or
`password.changed`) for USERS users to a Fleet exchange, as the outbox relay
would: protobuf `fleet.events.v1.Event` bodies, persistent, with publisher
confirms. The encoding is written out by hand (a few fields) so the
benchmarks need only pika.

    python publish.py AMQP_URL EXCHANGE COUNT USERS [KIND]

User i's id is md5(i) as a UUID, so a benchmark can prepare their rows in SQL.
"""

import hashlib
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


# The payload's field number in `Event` and its encoding, per kind.
PAYLOADS = {
    "auth.login_failed": (
        21,
        field(1, b"bad_password") + field(2, b"192.0.2.1") + field(3, b"bench") + int_field(4, 1),
    ),
    "password.changed": (24, int_field(1, 1)),
}


def event(user, now_ns, kind):
    seconds, nanos = divmod(now_ns, 1_000_000_000)
    number, payload = PAYLOADS[kind]
    return (
        field(1, str(uuid.uuid4()).encode())
        + field(2, kind.encode())
        + field(3, int_field(1, seconds) + int_field(2, nanos))
        + field(4, user.encode())
        + field(6, b"bench")
        + field(number, payload)
    )


def main():
    url, exchange, count, users = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    kind = sys.argv[5] if len(sys.argv) > 5 else "auth.login_failed"
    # User i is md5(i) as a UUID, as PostgreSQL's md5(i::text)::uuid makes it.
    ids = [str(uuid.UUID(hashlib.md5(str(i).encode()).hexdigest())) for i in range(users)]
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2, content_type="application/x-protobuf")
    started = time.monotonic()
    for i in range(count):
        body = event(ids[i % users], time.time_ns(), kind)
        channel.basic_publish(exchange, kind, body, props)
    elapsed = time.monotonic() - started
    connection.close()
    print(f"published {count} in {elapsed:.1f} s ({count / elapsed:.0f}/s)", file=sys.stderr)


if __name__ == "__main__":
    main()
