#!/usr/bin/env python3
"""Idle clients on the pooler: opens N logged-in client connections (trust auth), holds them,
and prints the pooler process's RSS before and after.

    examples/bench/idle-clients.py PID [PORT] [N] [DATABASE]

Needs `ulimit -n` above N for this process and the pooler's.
"""
import asyncio
import struct
import sys


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


def startup(user, database):
    body = struct.pack(">i", 196608)
    for part in ("user", user, "database", database, ""):
        body += part.encode() + b"\0"
    return struct.pack(">i", len(body) + 4) + body


async def login(port, database, held):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(startup("postgres", database))
    await writer.drain()
    seen = b""
    while b"Z\0\0\0\x05I" not in seen:
        chunk = await reader.read(4096)
        if not chunk:
            raise RuntimeError(f"closed during login: {seen!r}")
        seen += chunk
    held.append(writer)


async def main():
    pid = int(sys.argv[1])
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 16433
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    database = sys.argv[4] if len(sys.argv) > 4 else "poolbench"
    before = rss_kib(pid)
    held = []
    for start in range(0, count, 500):
        await asyncio.gather(*(login(port, database, held) for _ in range(start, min(count, start + 500))))
    await asyncio.sleep(2)
    after = rss_kib(pid)
    print(f"idle clients: {len(held)} logged in; pooler RSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB, "
          f"extra {(after - before) / 1024:.1f} MiB ({(after - before) * 1024 / max(len(held), 1):.0f} bytes per client)")
    for writer in held:
        writer.write(b"X\0\0\0\x04")
        writer.close()


asyncio.run(main())
