"""Bounded load benchmark of the API on loopback.

Starts ``measures serve`` (uvicorn, one worker) on 127.0.0.1 in a subprocess over a small synthetic lake, then
times N sequential requests per scenario, and N more from ``--concurrency`` client threads:

* ``one_measure``: ``POST /Measure/CMS125/$evaluate-measure`` with a typical patient Bundle
* ``library``:     ``POST /Measure/$evaluate-measures`` (every measure that evaluates; see ``skipped``)
* ``lake_patient``: ``GET /Patient/{id}/$evaluate-measures`` (one bucket read from the lake)

The typical Bundle is the synthetic patient with the median number of resources. Writes
benchmarks/results/api_latency.json (p50/p95/p99 in ms and requests/s per scenario).

    .venv/bin/python benchmarks/api_load.py --requests 200 --concurrency 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "api_latency.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lake(root: Path, n_patients: int) -> tuple[str, dict[str, Any], str]:
    """A synthetic lake, the median-sized patient's Bundle, and a lake patient id."""

    from datasets.fhir.export import export_patient_bundles
    from datasets.source import ParquetSource
    from datasets.synthetic import SynthConfig, generate

    lake = root / "lake"
    generate(str(lake), SynthConfig(n_patients=n_patients, n_buckets=8, seed=5))
    source = ParquetSource(str(lake))
    tables = {t: source.scan(t).collect() for t in source.manifest.tables if source.has_table(t)}  # type: ignore[union-attr]
    bundles = sorted(export_patient_bundles(tables), key=lambda b: len(b["entry"]))
    typical = bundles[len(bundles) // 2]
    pid = typical["entry"][0]["resource"]["id"]
    return str(lake), typical, pid


def _percentiles(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 2)

    return {
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


def _run(base: str, method: str, path: str, body: bytes | None, n: int, concurrency: int) -> dict[str, Any]:
    headers = {"content-type": "application/fhir+json"}
    statuses: dict[int, int] = {}

    def one(client: httpx.Client) -> float:
        t = time.perf_counter()
        r = client.request(method, path, content=body, headers=headers)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        return 1000 * (time.perf_counter() - t)

    with httpx.Client(base_url=base, timeout=60) as client:
        for _ in range(min(10, n)):  # warm-up
            one(client)
        statuses.clear()
        started = time.perf_counter()
        seq = [one(client) for _ in range(n)]
        seq_s = time.perf_counter() - started
    out: dict[str, Any] = {
        "sequential": {**_percentiles(seq), "requests": n, "requests_per_s": round(n / seq_s, 1)}
    }
    if concurrency > 1:
        clients = [httpx.Client(base_url=base, timeout=60) for _ in range(concurrency)]
        try:
            started = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                conc = list(pool.map(lambda i: one(clients[i % concurrency]), range(n)))
            conc_s = time.perf_counter() - started
        finally:
            for c in clients:
                c.close()
        out[f"concurrency_{concurrency}"] = {
            **_percentiles(conc),
            "requests": n,
            "requests_per_s": round(n / conc_s, 1),
        }
    out["statuses"] = {str(k): v for k, v in sorted(statuses.items())}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, default=200, help="requests per scenario and mode (default 200)"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="client threads of the concurrent pass")
    parser.add_argument("--patients", type=int, default=400, help="synthetic lake size (default 400)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        lake, bundle, pid = _lake(Path(tmp), args.patients)
        body = json.dumps(bundle).encode()
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEASURES_")}
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "handlers.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--data",
                lake,
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            started = time.perf_counter()
            while True:
                try:
                    health = httpx.get(f"{base}/health", timeout=5).json()
                    break
                except httpx.HTTPError:
                    if server.poll() is not None or time.perf_counter() - started > 120:
                        raise SystemExit("the server did not start") from None
                    time.sleep(0.2)
            startup_s = time.perf_counter() - started
            ids = health["measures"]
            ok, skipped = [], {}
            for measure_id in ids:
                r = httpx.post(f"{base}/Measure/{measure_id}/$evaluate-measure", content=body, timeout=60)
                (
                    ok.append(measure_id)
                    if r.status_code == 200
                    else skipped.__setitem__(measure_id, r.status_code)
                )
            one = "CMS125" if "CMS125" in ok else ok[0]
            query = "&".join(f"measure={m}" for m in ok)
            scenarios = {
                "one_measure": _run(
                    base, "POST", f"/Measure/{one}/$evaluate-measure", body, args.requests, args.concurrency
                ),
                "library": _run(
                    base,
                    "POST",
                    f"/Measure/$evaluate-measures?{query}",
                    body,
                    args.requests,
                    args.concurrency,
                ),
                "lake_patient": _run(
                    base,
                    "GET",
                    f"/Patient/{pid}/$evaluate-measures?{query}",
                    None,
                    args.requests,
                    args.concurrency,
                ),
            }
        finally:
            server.terminate()
            server.wait(timeout=30)
    document = {
        "command": "benchmarks/api_load.py " + " ".join(sys.argv[1:]),
        "server": "uvicorn, 1 worker, 127.0.0.1 (measures serve)",
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "startup_to_healthy_s": round(startup_s, 2),
        "bundle": {"resources": len(bundle["entry"]), "bytes": len(body)},
        "one_measure_id": one,
        "library_measures": ok,
        "skipped_measures": skipped,
        "scenarios": scenarios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
