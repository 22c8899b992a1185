"""Cold-start import cost of the shard worker: ``import handlers.batch`` with and without precompiled .pyc.

On Lambda /var/task and /opt are read-only, so a bundle shipped without ``__pycache__`` recompiles every
module on every cold start. This copies the modules ``handlers.batch`` pulls in (app packages + their
site-packages dependencies) into two temporary trees, one with no .pyc and one precompiled the way
scripts/build_layer.sh does (``compileall --invalidation-mode unchecked-hash``),
then times a fresh ``python -S -c "import ..."``
subprocess against each (``PYTHONDONTWRITEBYTECODE=1`` so the no-.pyc tree stays that way). The OS page cache
is warm (dropping it needs root on the host), so these are lower bounds for a real cold start.

    .venv/bin/python benchmarks/cold_import.py [--runs 7] [--module handlers.batch]

Writes benchmarks/results/cold_import.json.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP_PACKAGES = ("definitions", "engine", "datasets", "handlers", "measures")


def _imported_top_levels(module: str) -> list[str]:
    code = (
        "import sys, json; before = set(sys.modules); import " + module + "; "
        "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout))


def _stage(module: str, dest: Path) -> list[str]:
    """Copy the app packages and every site-packages entry the import touches; returns what was copied."""
    site = Path(sysconfig.get_paths()["purelib"])
    wanted = set(_imported_top_levels(module))
    copied: list[str] = []
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "tests")
    for name in APP_PACKAGES:
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
        copied.append(name)
    for entry in sorted(site.iterdir()):
        base = entry.name.split(".")[0]
        stem = re.sub(r"\.(libs|py)$", "", entry.name)
        if entry.name.endswith((".dist-info", ".pth")) or (base not in wanted and stem not in wanted):
            continue
        if base in APP_PACKAGES:
            continue
        target = dest / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, ignore=ignore, symlinks=True)
        else:
            shutil.copy2(entry, target)
        copied.append(entry.name)
    # numpy.libs / pydantic_core etc. ride along by name; *.libs for wheels with vendored shared objects
    for entry in site.glob("*.libs"):
        if not (dest / entry.name).exists() and entry.name.split(".")[0] in wanted:
            shutil.copytree(entry, dest / entry.name, symlinks=True)
            copied.append(entry.name)
    return copied


def _time_import(tree: Path, module: str, runs: int) -> list[float]:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(tree)}
    env["POLARS_MAX_THREADS"] = os.environ.get("POLARS_MAX_THREADS", "2")
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-S", "-c", f"import {module}"], env=env, cwd=tree, check=True)
        times.append(time.perf_counter() - began)
    return times


def _importtime_top(tree: Path, module: str, n: int = 12) -> list[dict[str, object]]:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", "-c", f"import {module}"],
        env=env, cwd=tree, capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = []
    for line in out.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(3)) <= 2:  # top-level imports only (indent 1)
            rows.append({"module": m.group(4), "cumulative_ms": round(int(m.group(2)) / 1000, 1)})
    return sorted(rows, key=lambda r: -float(r["cumulative_ms"]))[:n]  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--module", default="handlers.batch")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cold_import.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cold-import-") as tmp:
        plain, compiled = Path(tmp, "no_pyc"), Path(tmp, "pyc")
        copied = _stage(args.module, plain)
        shutil.copytree(plain, compiled, symlinks=True)
        compileall.compile_dir(
            str(compiled), quiet=1, workers=0,
            invalidation_mode=compileall.py_compile.PycInvalidationMode.UNCHECKED_HASH,  # type: ignore[attr-defined]
        )  # fmt: skip
        size = lambda p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())  # noqa: E731
        _time_import(compiled, args.module, 1)  # warm the page cache for both trees alike
        _time_import(plain, args.module, 1)
        results = {}
        for label, tree in (("no_pyc", plain), ("pyc", compiled)):
            times = _time_import(tree, args.module, args.runs)
            results[label] = {
                "median_s": round(statistics.median(times), 3),
                "min_s": round(min(times), 3),
                "max_s": round(max(times), 3),
                "runs_s": [round(t, 3) for t in times],
                "tree_mib": round(size(tree) / 2**20, 1),
            }
        baseline = _time_import(compiled, "sys", args.runs)
        top = _importtime_top(compiled, args.module)

    doc = {
        "module": args.module,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "page_cache": "warm (lower bound for a Lambda cold start)",
        "empty_interpreter_median_s": round(statistics.median(baseline), 3),
        "results": results,
        "speedup_pyc": round(results["no_pyc"]["median_s"] / results["pyc"]["median_s"], 2),
        "importtime_top_level_with_pyc": top,
        "staged": copied,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(
        f"import {args.module}: no .pyc {results['no_pyc']['median_s']:.3f} s, "
        f".pyc {results['pyc']['median_s']:.3f} s (x{doc['speedup_pyc']}), "
        f"empty interpreter {doc['empty_interpreter_median_s']:.3f} s -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
