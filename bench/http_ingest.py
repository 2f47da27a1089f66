"""HTTP ingest as a user runs the service: uvicorn with the run command's worker count, PostGIS, Redis.

A private stack on free loopback ports (never the demo data), the Helsinki fences, N registered devices,
then wrk (C, from Debian) drives single-fix requests and batches of 100 for a bounded time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from infra.stack import free_port, private_stack, start_api

ROOT = Path(__file__).resolve().parent.parent
EXTRACT = ROOT / "tests" / "data" / "osm" / "helsinki-centre.osm.pbf"

LUA = r"""
local creds = {}
for line in io.lines(os.getenv("BENCH_CREDS")) do creds[#creds + 1] = line end
local batch = tonumber(os.getenv("BENCH_BATCH"))
local threads, counter, first, step, start = 0, 0, 0, 1, tonumber(os.getenv("BENCH_T0"))
local all_threads = {}
function setup(thread) thread:set("first", threads); threads = threads + 1; table.insert(all_threads, thread) end
failed = {}
function response(status, headers, body)
  if status >= 300 then failed[status] = (failed[status] or 0) + 1; failed_text = "" end
  if status >= 300 then for code, n in pairs(failed) do failed_text = failed_text .. code .. "=" .. n .. " " end end
end
function done(summary, latency, requests)
  for _, thread in ipairs(all_threads) do
    local text = thread:get("failed_text")
    if text then io.write("STATUSES " .. text .. "\n") end
  end
end
function init(args) step = tonumber(os.getenv("BENCH_THREADS")); math.randomseed(first + 7) end
local function fix(seconds)
  local lon = 24.935 + math.random() * 0.018
  local lat = 60.164 + math.random() * 0.015
  return string.format('{"lon":%.6f,"lat":%.6f,"accuracy_m":10,"ts":"%s"}', lon, lat,
                       os.date("!%Y-%m-%dT%H:%M:%SZ", start + seconds))
end
function request()
  counter = counter + 1
  local device = ((counter * step + first) % #creds) + 1
  local round = math.floor(counter * step / #creds)
  local headers = {["Authorization"] = "Bearer " .. creds[device], ["Content-Type"] = "application/json"}
  if batch == 1 then
    return wrk.format("POST", "/v1/fixes", headers, fix(round))
  end
  local parts = {}
  for i = 1, batch do parts[i] = fix(round * batch + i) end
  local body = string.format('{"batch_id":"b-%d-%d","fixes":[%s]}', first, counter, table.concat(parts, ","))
  return wrk.format("POST", "/v1/fixes/batch", headers, body)
end
"""


def _wrk(url: str, creds: Path, batch: int, seconds: int, connections: int, threads: int = 2) -> dict[str, Any]:
    script = creds.parent / "bench.lua"
    script.write_text(LUA)
    env = {
        **os.environ,
        "BENCH_CREDS": str(creds),
        "BENCH_BATCH": str(batch),
        "BENCH_THREADS": str(threads),
        "BENCH_T0": str(int(time.time()) - 86400),
    }
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "--timeout",
            "5s",
            "-s",
            str(script),
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = {
        p: _ms(re.search(rf"\s{p}%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
        for p in ("50", "99")
    }
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    statuses: dict[str, int] = {}
    for line in re.findall(r"STATUSES (.*)", out):  # one line per wrk thread
        for code, n in re.findall(r"(\d+)=(\d+)", line):
            statuses[code] = statuses.get(code, 0) + int(n)
    timeouts = re.search(r"timeout (\d+)", out)
    return {
        "batch": batch,
        "connections": connections,
        "seconds": seconds,
        "requests_per_s": rps,
        "fixes_per_s": rps * batch,
        "p50_ms": latency["50"],
        "p99_ms": latency["99"],
        "non_2xx": int(errors.group(1)) if errors else 0,
        "non_2xx_statuses": statuses,
        "timeouts": int(timeouts.group(1)) if timeouts else 0,
    }


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_http_bench(devices: int = 500, seconds: int = 15, workers: int = 2) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
    with private_stack("placecast-bench-") as (root, stack_env):
        # The devices all enrol from loopback with one key within seconds: far past the enrolment limits.
        env = {**os.environ, **stack_env, "PLACECAST_LOG_LEVEL": "WARNING"}
        env["PLACECAST_ENROLMENTS_PER_ADDRESS"] = env["PLACECAST_ENROLMENTS_PER_KEY"] = "1000000"
        return _run(root, env, devices, seconds, workers)


def _run(root: Path, env: dict[str, str], devices: int, seconds: int, workers: int) -> dict[str, Any]:
    api_port = free_port()
    env["PLACECAST_API_PORT"] = str(api_port)
    api = None
    try:
        cli = [sys.executable, "-m", "infra.cli"]
        subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
        subprocess.run([*cli, "create-org", "bench", "bench"], env=env, check=True, capture_output=True)
        subprocess.run([*cli, "import-osm", str(EXTRACT), "--org", "bench"], env=env, check=True, capture_output=True)
        enrol = subprocess.run(
            [*cli, "create-api-key", "bench", "--purpose", "enrolment"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        api = start_api(env, api_port, workers=workers)
        base = f"http://127.0.0.1:{api_port}"
        with httpx.Client(base_url=base, timeout=10) as http:
            creds = [
                http.post("/v1/devices", headers={"X-Enrolment-Key": enrol}, json={"platform": "android"}).json()[
                    "credential"
                ]
                for _ in range(devices)
            ]
        cred_file = root / "creds.txt"
        cred_file.write_text("\n".join(creds) + "\n")
        _wrk(base, cred_file, 1, 3, 16)  # warm-up: indexes built, pools filled
        single = _wrk(base, cred_file, 1, seconds, 32)
        batched = _wrk(base, cred_file, 100, seconds, 8)
        return {"workers": workers, "devices": devices, "single": single, "batch_100": batched}
    finally:
        if api is not None:
            api.terminate()
            api.wait(timeout=20)


if __name__ == "__main__":
    print(json.dumps(run_http_bench(), indent=2))
