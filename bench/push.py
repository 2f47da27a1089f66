"""Push benchmark: firebase-admin's two send paths alone, against the local FCM fake, same run, side by side.

`send_each_async` (httpx on the event loop) and `send_each` (requests, a thread per message, run through
`asyncio.to_thread` as `FcmSender` does), over TLS + HTTP/2 and over plain HTTP/1.1, in batches of each size,
and over TLS again with the fake delaying its answers (`--latency-ms`) as FCM's round trip would. The fake
runs in its own process (hypercorn, one worker) so it does not share the client's GIL. Messages are the real
ones `notifications.push.build_message` makes. The figure is pushes/s, median of `repeats` passes over `n`
messages, passes interleaved, after one warm-up batch (OAuth2 token, connections). Beside it: CPU per 1,000
pushes of this process (all threads) and of the fake, connections opened per pass (pool churn), and OAuth2
tokens fetched by a fresh app's first batch of 50 (google-auth refreshes without a lock).

`run_push_bench` returns plain dicts; `python -m bench.push` prints a table (and `--json`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from firebase_admin import messaging

from infra.fake_fcm import RunningFake, spawn, write_service_account
from infra.stack import free_port
from notifications.push import FcmSender, PushMessage, SendPath, build_message

PATHS: tuple[SendPath, ...] = ("async", "threads")
BASE_TRANSPORTS = (("tls+h2", False, 0.0), ("plain http/1.1", True, 0.0))  # (name, plain HTTP, latency)


@contextmanager
def _trusting(fake: RunningFake) -> Iterator[None]:
    """Trust the fake's CA for this process only: httpx reads SSL_CERT_FILE, requests REQUESTS_CA_BUNDLE."""
    saved = {k: os.environ.get(k) for k in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")}
    if fake.tls is not None:
        os.environ.update(dict.fromkeys(saved, str(fake.tls.ca)))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc: is the fake the bottleneck?"""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _connections(fake: RunningFake) -> int:
    with fake.client() as control:
        return int(control.get("/_fake/stats").json()["connections"])


async def _send(sender: FcmSender, path: SendPath, batch: list[Any]) -> list[str]:
    """Send one batch; the error codes of the messages that failed."""
    if path == "async":
        result = await messaging.send_each_async(batch, app=sender.app)
    else:
        result = await asyncio.to_thread(messaging.send_each, batch, False, sender.app)
    return [str(getattr(r.exception, "code", r.exception)) for r in result.responses if not r.success]


async def _cold_tokens(fake: RunningFake, account: Path, path: SendPath, batch: list[Any]) -> int:
    """OAuth2 tokens a fresh sender fetches for its first batch (google-auth has no lock around refresh)."""
    sender = FcmSender(account, base_url=fake.base_url)
    with fake.client() as control:
        before = control.get("/_fake/stats").json().get("tokens_issued", 0)
        await _send(sender, path, batch)
        after = control.get("/_fake/stats").json().get("tokens_issued", 0)
    await sender.aclose()
    return int(after - before)


async def _measure(
    fake: RunningFake, account: Path, batch_sizes: Sequence[int], n: int, repeats: int
) -> list[dict[str, Any]]:
    """Every (path, batch size) once per pass, passes interleaved, so background load hits all alike."""
    built = [
        build_message(PushMessage(i, f"bench-{i}", "Oodi is open", "Come in", {"place": "42"}, ttl_s=600))
        for i in range(n)
    ]
    cold = {path: await _cold_tokens(fake, account, path, built[:50]) for path in PATHS}
    runs: dict[tuple[SendPath, int], list[dict[str, Any]]] = {(p, b): [] for p in PATHS for b in batch_sizes}
    sender = FcmSender(account, base_url=fake.base_url)
    try:
        for path in PATHS:  # token, connections, TLS handshakes
            await _send(sender, path, built[: max(batch_sizes)])
        for _ in range(repeats):
            for (path, size), passes in runs.items():
                conns, cpu, cpu_fake = _connections(fake), time.process_time(), _cpu_s(fake.process.pid)
                start, failed = time.perf_counter(), []
                for i in range(0, n, size):
                    failed += await _send(sender, path, built[i : i + size])
                rate = n / (time.perf_counter() - start)
                used = (time.process_time() - cpu, _cpu_s(fake.process.pid) - cpu_fake)
                new_conns = _connections(fake) - conns
                passes.append({"rate": rate, "cpu": used, "conns": new_conns, "failed": failed})
    finally:
        await sender.aclose()
    return [
        {
            "path": path,
            "batch": size,
            "pushes_per_s": statistics.median(p["rate"] for p in passes),
            "min": min(p["rate"] for p in passes),
            "max": max(p["rate"] for p in passes),
            "failed": dict(Counter(code for p in passes for code in p["failed"])),
            "client_cpu_s_per_1k": sum(p["cpu"][0] for p in passes) * 1000 / (n * repeats),  # all threads
            "server_cpu_s_per_1k": sum(p["cpu"][1] for p in passes) * 1000 / (n * repeats),
            "new_connections_per_pass": statistics.median(p["conns"] for p in passes),
            "cold_start_tokens": cold[path],
        }
        for (path, size), passes in runs.items()
    ]


def run_push_bench(
    n: int = 2000,
    batch_sizes: Sequence[int] = (50, 500),
    repeats: int = 3,
    latencies_ms: Sequence[float] = (25,),
) -> dict[str, Any]:
    """Pushes/s per transport, path and batch size. Without latency the fake answers at once, which measures
    CPU cost; each latency adds a TLS + HTTP/2 run whose fake delays its answers like FCM's round trip would,
    which measures how well each path keeps requests in flight."""
    transports = [*BASE_TRANSPORTS, *((f"tls+h2 +{ms:g} ms", False, ms) for ms in latencies_ms if ms)]
    results: dict[str, Any] = {
        "n": n,
        "repeats": repeats,
        "runs": [],
        "transports": [t[0] for t in transports],
    }
    with tempfile.TemporaryDirectory(prefix="placecast-bench-push-") as tmp:
        for transport, plain, latency_ms in transports:
            port = free_port()
            url = f"{'http' if plain else 'https'}://127.0.0.1:{port}/token"
            account = write_service_account(Path(tmp) / f"sa-{port}.json", url)
            options: dict[str, Any] = {
                "plain_http": plain,
                "service_account": account,
                "latency_ms": latency_ms,
            }
            with (
                spawn(port, Path(tmp) / "certs", **options) as fake,
                _trusting(fake),
                fake.client() as control,
            ):
                runs = asyncio.run(_measure(fake, account, batch_sizes, n, repeats))
                seen = [k.removeprefix("http/") for k in control.get("/_fake/stats").json() if "http/" in k]
            results["runs"] += [r | {"transport": transport, "http": ",".join(seen)} for r in runs]
    for transport, _, _ in transports:
        mine = [r for r in results["runs"] if r["transport"] == transport]
        best = max(mine, key=lambda r: r["pushes_per_s"])
        results[f"fastest {transport}"] = f"{best['path']} / batch {best['batch']}"
    return results


def _print_table(results: dict[str, Any]) -> None:
    names = {"async": "send_each_async", "threads": "send_each (to_thread)"}
    print(f"{results['n']:,} pushes per pass, median of {results['repeats']} interleaved passes")
    head = f"{'transport':16}{'path':22}{'batch':>6}{'pushes/s':>9}{'min..max':>13}"
    print(head + f"{'CPU s/1k client':>16}{'fake':>6}{'new conns':>10}{'cold tokens':>12}  failed")
    for r in results["runs"]:
        spread = f"{r['min']:,.0f}..{r['max']:,.0f}"
        line = f"{r['transport']:16}{names[r['path']]:22}{r['batch']:>6}"
        line += f"{r['pushes_per_s']:>9,.0f}{spread:>13}"
        cpu = f"{r['client_cpu_s_per_1k']:>16.2f}{r['server_cpu_s_per_1k']:>6.2f}"
        failed = ",".join(f"{n} {code}" for code, n in r["failed"].items()) or "0"
        print(line + f"{cpu}{r['new_connections_per_pass']:>10.0f}{r['cold_start_tokens']:>12}  {failed}")
    for transport in results["transports"]:
        http = next(r["http"] for r in results["runs"] if r["transport"] == transport)
        print(f"{transport}: HTTP versions the fake saw: {http}; fastest: {results[f'fastest {transport}']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=2000, help="pushes per timed pass")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, nargs="*", default=[25], help="extra TLS runs, delayed")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    results = run_push_bench(args.n, args.batch_sizes, args.repeats, args.latency_ms)
    _print_table(results)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
