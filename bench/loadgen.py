"""A bounded-run HTTP/1.1 load generator: `clients` keep-alive connections send
`requests` POSTs in total, as fast as the answers come, and the per-request latencies
(perf_counter_ns, from writing the request to reading the whole answer) are
summarised as JSON on stdout. Run as its own process (bench/serving.py does).

    python bench/loadgen.py --url http://127.0.0.1:8000/v1/models/m/predict \
        --body '{"inputs": [[0.5, -0.25]]}' --header 'Authorization: Bearer ...' \
        --requests 2000 --clients 16

Why not an HTTP library: the client shares the machine's two cores with the server,
so it must cost little per request (asyncio streams on uvloop do), and `hey` reports
latencies only to 0.1 ms, too coarse for a 0.3 ms floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit

import uvloop


async def one_client(host: str, port: int, request: bytes, budget: list[int], latencies: list[int],
                     statuses: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while budget[0] > 0:
            budget[0] -= 1
            start = time.perf_counter_ns()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter_ns() - start)
            status = int(head[9:12])
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def run(url: str, body: bytes, headers: list[str], requests: int, clients: int) -> dict:
    parts = urlsplit(url)
    lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *headers]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    budget, latencies, statuses = [requests], [], {}
    start = time.perf_counter()
    await asyncio.gather(*(one_client(parts.hostname, parts.port, request, budget, latencies, statuses)
                           for _ in range(clients)))
    wall = time.perf_counter() - start
    latencies.sort()
    n = len(latencies)
    return {"requests": n, "statuses": statuses, "wall_s": wall, "req_s": n / wall,
            "p50_ms": latencies[n // 2] / 1e6, "p99_ms": latencies[min(n - 1, int(n * 0.99))] / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--clients", type=int, required=True)
    args = parser.parse_args()
    result = uvloop.run(run(args.url, args.body.encode(), args.header, args.requests, args.clients))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
