"""Simulated clients for the capacity row: each heartbeats every 30 s and reads its own
presence every 60 s, at a random phase, through a shared connection pool (as behind a proxy).

Latency is measured from when a request was due, not when it was sent, so a server that
falls behind shows it (no coordinated omission). Prints one JSON line of results.

    python bench/load.py --url http://127.0.0.1:8000 --tokens tokens.txt --clients 10000 --duration 180
"""

import argparse
import asyncio
import json
import os
import random
import resource
import time

import aiohttp

HEARTBEAT_EVERY = 30.0
READ_EVERY = 60.0


async def client(session, url, token, *, start, stop, latencies, failures):
    headers = {"Authorization": f"Bearer {token}"}
    due_heartbeat = start + random.uniform(0, HEARTBEAT_EVERY)
    due_read = start + random.uniform(0, READ_EVERY)
    while True:
        due = min(due_heartbeat, due_read)
        if due >= stop:
            return
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        if due == due_heartbeat:
            request = session.post(f"{url}/api/users/heartbeat/", json={"status": "online"}, headers=headers)
            due_heartbeat += HEARTBEAT_EVERY
        else:
            request = session.get(f"{url}/api/users/me/presence/", headers=headers)
            due_read += READ_EVERY
        try:
            async with request as response:
                await response.read()
                if response.status >= 400:
                    failures.append(response.status)
        except (aiohttp.ClientError, asyncio.TimeoutError) as failure:
            failures.append(type(failure).__name__)
        latencies.append(time.monotonic() - due)


async def main(args):
    tokens = open(args.tokens).read().split()[: args.clients]
    if len(tokens) < args.clients:
        raise SystemExit(f"only {len(tokens)} tokens for {args.clients} clients")
    latencies, failures = [], []
    busy_before, cpu_before = _machine_busy(), _own_cpu()
    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.monotonic()
        stop = start + args.duration
        await asyncio.gather(
            *(
                client(session, args.url, token, start=start, stop=stop, latencies=latencies, failures=failures)
                for token in tokens
            )
        )
    elapsed = time.monotonic() - start
    busy_after, cpu_after = _machine_busy(), _own_cpu()
    latencies.sort()

    def percentile(share):
        return latencies[min(len(latencies) - 1, int(share * len(latencies)))] * 1000 if latencies else None

    print(
        json.dumps(
            {
                "clients": args.clients,
                "duration_s": args.duration,
                "requests": len(latencies),
                "rps": len(latencies) / args.duration,
                "p50_ms": percentile(0.50),
                "p99_ms": percentile(0.99),
                "max_ms": latencies[-1] * 1000 if latencies else None,
                "errors": len(failures),
                "error_kinds": sorted({str(kind) for kind in failures})[:5],
                # Shares of the whole machine (all cores) over the run: this load generator's
                # CPU, and every process's (the server, the database, Redis and this).
                "generator_cpu_share": (cpu_after - cpu_before) / elapsed / os.cpu_count(),
                "machine_cpu_share": (busy_after[0] - busy_before[0]) / max(busy_after[1] - busy_before[1], 1),
            }
        )
    )


def _own_cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _machine_busy():
    """(busy, total) jiffies of all cores, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--tokens", required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--connections", type=int, default=64)
    asyncio.run(main(parser.parse_args()))
