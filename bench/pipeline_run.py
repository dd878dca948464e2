"""How long ``make demo`` takes: the whole method (data → split → warm-up → 2 iterations of buffer, MCTS, DPO →
evaluation after every stage → report) on the embedded model, as a newcomer runs it.

It runs ``python -m flows.cli run --profile demo`` (what ``make demo`` runs) in a subprocess with a fresh
``ITOOL_HOME`` and ``PREFECT_HOME`` by default, so the first-run GGUF → safetensors conversion and a fresh Prefect
database are part of the time, and writes ``bench/results/run_demo.json`` (``run_<profile>.json`` with
``--profile``): the command, the machine, the date, the wall time in all and per stage, the peak memory, and
the scores per stage with n and the 95 % interval.  ``docs/RESULTS.md`` is generated from these files
(bench/results_page.py).  The goal the project holds the demo to is **≤ 15 min on 2 CPU cores**; the JSON says
whether this run met it.

    python bench/pipeline_run.py                       # fresh home: what a new user's first `make demo` costs
    python bench/pipeline_run.py --home ~/.cache/itool # reuse a converted model (a second run, cached stages not reused
                                               # unless --run-dir is reused too)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 15 * 60


def machine() -> dict:
    """CPU model, cores, memory, Python and torch versions: what a timing depends on."""
    cpu = platform.processor()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), cpu)
        flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    except OSError:
        flags = []
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import torch

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gb, 1),
        "bf16_native": "amx_bf16" in flags or "avx512_bf16" in flags,
        "gpu": torch.cuda.is_available(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", help="ITOOL_HOME to use (default: a fresh temporary folder)")
    ap.add_argument("--profile", default="demo", help="profile to run (demo: what `make demo` runs)")
    ap.add_argument("--out", help="default bench/results/run_<profile>.json")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the 2-core goal)")
    a = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="itool-demo-bench-"))
    home = Path(a.home).expanduser() if a.home else tmp / "home"
    run_dir, uri = tmp / "run", f"sqlite:///{tmp / 'mlflow.db'}"
    cmd = [
        sys.executable,
        "-m",
        "flows.cli",
        "run",
        "--profile",
        a.profile,
        "--run-dir",
        str(run_dir),
        "--tracking-uri",
        uri,
    ]
    env = {
        **os.environ,
        "ITOOL_HOME": str(home),
        "PREFECT_HOME": str(tmp / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": str(a.threads),
    }
    env.pop("PREFECT_API_URL", None)  # a newcomer has no server: the flow starts its temporary one
    print(f"[bench] {' '.join(cmd)}  (ITOOL_HOME={home})", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True)
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    log = tmp / "demo.log"
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-5000:], sep="\n")
        print(f"[bench] demo failed (exit {proc.returncode}); log: {log}")
        return 1
    summary = json.loads((run_dir / "flow_summary.json").read_text())
    stages = {k: round(v, 1) for k, v in summary["wall_s"].items()}
    scores = []
    for row in summary["rows"]:
        cats = dict((row["summary"].get("bfcl") or {}).get("categories") or {})
        cats.update({f"apibank_{k}": v for k, v in (row["summary"].get("apibank") or {}).items()})
        scores.append(
            {
                "stage": row["label"],
                "pairs": row.get("pairs"),
                "categories": {c: {k: v[k] for k in ("correct", "total", "accuracy", "ci95")} for c, v in cats.items()},
            }
        )
    top = {k: v for k, v in stages.items() if k.count("/") <= 1}  # mining's sub-steps are inside "iter_i/mine"
    result = {
        "bench": "run",
        "profile": a.profile,
        "command": "make demo" if a.profile == "demo" else f"itool run --profile {a.profile}",
        "date": date.today().isoformat(),
        "machine": machine(),
        "fresh_home": a.home is None,
        "wall_s": round(wall, 1),
        "flow_wall_s": round(summary.get("flow_wall_s", 0.0), 1),
        "startup_s": round(wall - summary.get("flow_wall_s", 0.0), 1),
        "goal_s": GOAL_S if a.profile == "demo" else None,
        "goal_met": wall <= GOAL_S if a.profile == "demo" else None,
        "peak_rss_mb": round(peak_mb),
        "stages_s": top,
        "states": summary["states"],
        "scores": scores,
        "note": "demo budgets: the scores show the pipeline working, not a quality claim (n per category is tiny)",
    }
    out = Path(a.out or ROOT / "bench" / "results" / f"run_{a.profile}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from itool_core.artifacts import atomic_write_json

    atomic_write_json(out, result)
    print(f"\n{'stage':<22} {'wall s':>8}")
    for k, v in top.items():
        print(f"{k:<22} {v:>8.1f}")
    print(f"{'(start-up, imports)':<22} {result['startup_s']:>8.1f}")
    goal = "" if result["goal_s"] is None else f"   goal ≤ {GOAL_S} s: {'met' if result['goal_met'] else 'NOT met'}"
    print(f"{'total':<22} {wall:>8.1f}{goal}")
    print(f"peak RSS {result['peak_rss_mb']} MB; written {out}; log {log}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
