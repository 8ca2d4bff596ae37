"""`charrnn serve` under load: what continuous batching buys, and a bounded load test.

    python -m benchmarks.serving --run checkpoints/my-run            # ~3 minutes
    python -m benchmarks.serving --run checkpoints/my-run --quick    # ~30 s, a smoke run

The server runs as its own process (`charrnn serve RUN` on 127.0.0.1 and a free port, the
default limits but a queue long enough for the load test); this process is the clients.

1. Concurrency. The same seeded requests (`length` new characters each) are sent one at a time,
   then 1, 8 and 32 at once. Aggregate characters/s = new characters / wall time of the round;
   the speed-up is against the one-at-a-time rate, on the same path (HTTP, the same server).
   The texts of every round must equal the one-at-a-time texts (a seeded request gives the
   same text alone or beside others): `same_texts`.
2. Load. `clients` concurrent clients (more than --max-streams, so some wait in the queue)
   send mixed requests (lengths 20 to `length`, a quarter of them streamed) until `requests`
   are done or `seconds` have passed, whichever is first. Recorded: served, errors by status,
   latency percentiles of whole requests and of the first streamed event.

Traffic goes to 127.0.0.1 only. Writes serving.json and serving.md under --out
(default benchmarks/_work/serving/), and prints the markdown.

Run it alone on the machine (a busy core slows a two-thread step many times over), and twice:
as served by default (int8 weights on a CPU for the default model: fastest at batch 1, but
torch's int8 kernel costs about in proportion to the batch) and with `--server-flag=--exact`
(fp32: slower alone, a real matrix product for the batch).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks import machine

HERE = Path(__file__).parent
FULL = {"length": 500, "repeats": 3, "requests": 400, "clients": 48, "seconds": 120.0}
QUICK = {"length": 200, "repeats": 1, "requests": 60, "clients": 40, "seconds": 20.0}
CONCURRENCY = (1, 8, 32)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(run: str, port: int, extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "charrnn", "serve", run, "--port", str(port),
               "--max-queue", "1000", *extra]  # fmt: skip
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"benchmarks.serving: the server stopped: {server.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("benchmarks.serving: the server did not answer /health within 120 s")


async def generate(http: httpx.AsyncClient, body: dict) -> dict:
    reply = await http.post("/v1/generate", json=body)
    reply.raise_for_status()
    return reply.json()


async def concurrency(http: httpx.AsyncClient, length: int, repeats: int) -> dict:
    """One-at-a-time rate, then 1, 8 and 32 clients at once, on the same seeded requests."""
    requests = [{"prime": "\n", "length": length, "seed": 1000 + n} for n in range(32)]
    await generate(http, {"length": 20})  # warm-up
    solo_rates, solo_texts = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        solo_texts = [(await generate(http, body))["text"] for body in requests]
        solo_rates.append(len(requests) * length / (time.perf_counter() - start))
    solo = statistics.median(solo_rates)
    rounds = {}
    for clients in CONCURRENCY:
        rates, same = [], True
        for _ in range(repeats):
            start = time.perf_counter()
            replies = await asyncio.gather(*(generate(http, b) for b in requests[:clients]))
            rates.append(clients * length / (time.perf_counter() - start))
            same &= [r["text"] for r in replies] == solo_texts[:clients]
        rate = statistics.median(rates)
        rounds[clients] = {"chars_per_sec": rate, "range": [min(rates), max(rates)],
                           "speedup": rate / solo, "same_texts": same}  # fmt: skip
    return {"length": length, "one_at_a_time_chars_per_sec": solo, "clients": rounds}


async def load(url: str, length: int, requests: int, clients: int, seconds: float) -> dict:
    """`clients` loops of mixed requests, until `requests` are done or `seconds` pass."""
    latencies, first_events, errors = [], [], {}
    issued = 0
    deadline = time.monotonic() + seconds
    chance = random.Random(0)

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal issued
        while issued < requests and time.monotonic() < deadline:
            issued += 1
            body = {"length": chance.randint(20, length), "temperature": chance.uniform(0.5, 1.2)}
            streamed = chance.random() < 0.25
            start = time.perf_counter()
            try:
                if streamed:
                    async with http.stream("POST", "/v1/generate",
                                           json={**body, "stream": True}) as reply:  # fmt: skip
                        status, first = reply.status_code, None
                        async for line in reply.aiter_lines():
                            if first is None and line.startswith("data:"):
                                first = time.perf_counter() - start
                            if line.startswith("event: error"):
                                status = "stream error"
                        if first is not None:
                            first_events.append(first)
                else:
                    status = (await http.post("/v1/generate", json=body)).status_code
            except httpx.HTTPError as error:
                status = type(error).__name__
            if status == 200:
                latencies.append(time.perf_counter() - start)
            else:
                errors[str(status)] = errors.get(str(status), 0) + 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return {
        "clients": clients,
        "requests_bound": requests,
        "seconds_bound": seconds,
        "seconds": time.monotonic() - started,
        "served": len(latencies),
        "errors": errors,
        "latency_s": percentiles(latencies),
        "first_event_s": percentiles(first_events),
    }


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]  # noqa: E731
    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": ordered[-1]}


def report(results: dict) -> str:
    c, lt = results["concurrency"], results["load"]
    lines = [
        "## Serving (`charrnn serve`)",
        "",
        f"Measured {results['when']} by `python -m benchmarks.serving{results['mode']}` on "
        f"{results['machine']['cpu']}, {results['machine']['cores']} cores; model "
        f"{results['model']} (int8: {results['int8']}), server and clients on this machine.",
        "",
        f"The same seeded requests of {c['length']} new characters, over HTTP:",
        "",
        "| clients at once | aggregate characters/s | vs one at a time | same texts |",
        "|---|---|---|---|",
        f"| one at a time | {c['one_at_a_time_chars_per_sec']:,.0f} | 1.0x | |",
    ]
    for clients, r in c["clients"].items():
        lines.append(f"| {clients} | {r['chars_per_sec']:,.0f} | {r['speedup']:.1f}x | "
                     f"{'yes' if r['same_texts'] else 'NO'} |")  # fmt: skip
    lat, first = lt["latency_s"], lt["first_event_s"]
    lines += [
        "",
        f"Load test: {lt['clients']} clients, mixed requests (20 to {c['length']} characters, a "
        f"quarter streamed), bounded at {lt['requests_bound']} requests or "
        f"{lt['seconds_bound']:.0f} s: **{lt['served']} served** in {lt['seconds']:.1f} s, "
        f"errors {lt['errors'] or 'none'}.",
        "",
        "| latency | p50 | p90 | p99 | max |",
        "|---|---|---|---|---|",
        "| whole request (s) | " + " | ".join(f"{lat.get(k, 0):.3f}"
                                             for k in ("p50", "p90", "p99", "max")) + " |",
        "| first streamed event (s) | " + " | ".join(f"{first.get(k, 0):.3f}"
                                                   for k in ("p50", "p90", "p99", "max")) + " |",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a run directory or .pt file (default: the newest run)")
    parser.add_argument("--quick", action="store_true", help="short rounds: a smoke run")
    parser.add_argument("--out", type=Path, default=HERE / "_work" / "serving")
    parser.add_argument(
        "--server-flag",
        action="append",
        default=[],
        help="passed to charrnn serve (repeat it), e.g. --server-flag=--exact",
    )
    args = parser.parse_args()
    from charrnn import rundir

    run = str(rundir.find_checkpoint(args.run or rundir.latest()))
    settings = QUICK if args.quick else FULL
    port = free_port()
    server = start_server(run, port, args.server_flag)
    url = f"http://127.0.0.1:{port}"
    try:
        health = httpx.get(f"{url}/health").json()
        model = httpx.get(f"{url}/v1/model").json()

        async def measure() -> tuple[dict, dict]:
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
                batching = await concurrency(http, settings["length"], settings["repeats"])
            loaded = await load(url, settings["length"], settings["requests"],
                                settings["clients"], settings["seconds"])  # fmt: skip
            return batching, loaded

        batching, loaded = asyncio.run(measure())
    finally:
        server.terminate()
        server.wait(60)
    results = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "mode": " --quick" if args.quick else "",
        "machine": machine.describe(),
        "model": f"{model['run']} ({model['cell']} {model['num_layers']}x{model['hidden_size']})",
        "int8": health["int8"],
        "concurrency": batching,
        "load": loaded,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serving.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "serving.md").write_text(report(results))
    print(report(results))
    if not all(r["same_texts"] for r in batching["clients"].values()):
        print("warning: a seeded request gave another text beside others", file=sys.stderr)


if __name__ == "__main__":
    main()
