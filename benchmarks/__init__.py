"""Benchmarks: `make bench` (python -m benchmarks.run). Results go to benchmarks/results/; never test assertions.

Shared helpers: where lakes live, generating one on demand, timing a child process (wall + peak RSS), medians.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"  # gitignored: generated lakes, exported bundles
RESULTS = ROOT / "benchmarks" / "results"
PY = sys.executable


def lake(n_patients: int, buckets: int = 64, seed: int = 0) -> Path:
    """The synthetic lake of ``n_patients`` (generated once with ``measures synth``, reused afterwards)."""
    root = (
        DATA / f"lake_{n_patients}"
        if (buckets, seed) == (64, 0)
        else DATA / f"lake_{n_patients}_{buckets}_{seed}"
    )
    if not (root / ".done").exists():
        from datasets.synthetic import SynthConfig, generate

        root.parent.mkdir(parents=True, exist_ok=True)
        generate(str(root), SynthConfig(n_patients=n_patients, n_buckets=buckets, seed=seed, processes=2))
        (root / ".done").touch()
    return root


def machine() -> dict[str, Any]:
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    import polars

    return {
        "python": platform.python_version(),
        "polars": polars.__version__,
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "mem_gib": mem,
        "platform": platform.platform(),
        "POLARS_MAX_THREADS": os.environ.get("POLARS_MAX_THREADS"),
    }


def run_child(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run a child process; (wall s, ``ru_maxrss`` GiB, stdout). Raises on a non-zero exit. The RSS figure
    includes the parent's high-water mark at fork: children that matter report :func:`peak_rss_gib`."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=None, env=env, cwd=ROOT, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{args} exited {proc.returncode}")
    return wall, usage.ru_maxrss / 2**20, out  # ru_maxrss is KiB on Linux


def peak_rss_gib() -> float:
    """This process's own peak RSS (``VmHWM``), for a child to report. ``ru_maxrss`` from ``wait4`` is not
    usable when the parent is large: Linux carries the forked parent's high-water mark into the child's."""
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kib / 2**20


def median(xs: list[float]) -> float:
    return round(statistics.median(xs), 3)


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def library_plans(ids: list[str] | None = None) -> tuple[list[Any], dict[str, str]]:
    """The library's compiled plans (``load_library``), skipping measures that do not compile (for example a
    measure whose value sets have no synthetic expansion yet); returns (plans, {measure file: reason})."""
    import measures
    from engine.library import load_library

    try:
        return load_library(ids), {}
    except Exception:
        pass
    plans: list[Any] = []
    skipped: dict[str, str] = {}
    for path in measures.measure_files():
        if ids is not None and path.stem.lower() not in {i.lower() for i in ids}:
            continue
        try:
            plans += load_library([path.stem])
        except Exception as exc:
            skipped[path.stem] = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}"
    return sorted(plans, key=lambda p: p.measure_id), skipped
