"""Stage caching, measured: wall time of the ``itool`` flow on a first run, on an unchanged re-run (every stage
``Cached``) and after changing only the evaluation settings (only the two evaluations re-run).

``--model tiny`` (default): the tiny random model and the tiny data set of tests/tiny_data.py (1 iteration,
the tiny budgets of tests/test_flows.py) — the first run is ~1 min, so the re-run's fixed cost (flow start,
one cache lookup per task, MLflow logging) is a visible share of it.  ``--model smollm2``: the embedded
SmolLM2-135M on the default training set with the quick profile's prompt and small real budgets (2 SFT steps
per stage, 1 iteration of 4 trees, 10 items per evaluation category) — minutes of real work per stage.
Both run in a temporary folder with a temporary Prefect home, MLflow in SQLite there.  Prints a table and
writes ``bench/results/cache.json`` (one entry per ``--model``).

    .venv/bin/python bench/cache.py                  # ≈ 2 min on 2 CPU cores
    .venv/bin/python bench/cache.py --model smollm2  # ≈ 10 min
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _smollm2_params(tmp: Path) -> dict:
    return dict(
        profile="quick",
        iterations=1,
        run_dir=str(tmp / "run"),
        tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
        config={"sft": {"max_steps_per_stage": 2, "per_device_batch_size": 2}, "buffer": {"alpha": 0.03}},
        evaluation={
            "categories": ["simple_python", "parallel", "irrelevance", "apibank_level1"],
            "limit": 10,
            "base": False,
        },
        mcts={"simulations": 2, "k": 2},
        preference={"max_steps": 2, "per_device_batch_size": 1, "grad_accum_steps": 1},
    )


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="itool-cache-bench-"))
    os.environ.setdefault("PREFECT_HOME", str(tmp / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the tiny data set and parameters live with the tests

    from test_flows import _params
    from tiny_data import _data

    from flows.iterate import iterate
    from itool_core.artifacts import write_table
    from itool_core.models import save_policy, tiny_model
    from itool_core.schemas import EXAMPLES

    if args.model == "tiny":
        model, tok = tiny_model(seed=0)
        tiny_dir = str(save_policy(model, tok, tmp / "tiny"))
        data = write_table([e.to_row() for e in _data()], tmp / "data.parquet", EXAMPLES)
        params = _params(tiny_dir, data.path, tmp / "run", f"sqlite:///{tmp / 'mlflow.db'}")
    else:
        params = _smollm2_params(tmp)
    changed_eval = {**params, "evaluation": {**params["evaluation"], "max_new_tokens": 5}}

    from prefect import flow

    @flow(name="bench-warm-server")
    def noop() -> None:
        return None

    t0 = time.perf_counter()
    noop()  # the temporary Prefect server starts on the first flow call: keep it out of the timings
    print(f"[bench] temporary Prefect server up in {time.perf_counter() - t0:.1f}s", flush=True)
    rows = []
    for label, p in (("first run", params), ("unchanged re-run", params), ("evaluation changed", changed_eval)):
        t0 = time.perf_counter()
        res = iterate(**p)
        wall = time.perf_counter() - t0
        stages_s = sum(res["wall_s"].values())
        rows.append(
            {
                "run": label,
                "wall_s": round(wall, 1),
                "stages_wall_s": round(stages_s, 1),
                "ran": res["ran"],
                "cached": res["cached"],
            }
        )
        print(f"[bench] {label}: {wall:.1f}s ({len(res['ran'])} ran, {len(res['cached'])} cached)", flush=True)

    print("\n| run | flow wall (s) | stage tasks (s) | stages ran | stages cached |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['wall_s']} | {r['stages_wall_s']} | {len(r['ran'])} | {len(r['cached'])} |")
    setup = (
        "tiny model, tests/tiny_data.py data, 1 iteration, tests/test_flows.py budgets"
        if args.model == "tiny"
        else "SmolLM2-135M, default training set, quick profile with "
        + json.dumps({k: params[k] for k in ("config", "evaluation", "mcts", "preference")})
    )
    ratio = rows[1]["wall_s"] / rows[0]["wall_s"]
    print(f"\nunchanged re-run / first run = {100 * ratio:.1f} % (goal <= 5 %)")
    print(f"flow wall includes MLflow run creation and logging (not the temporary server start); {setup}.")
    out = ROOT / "bench" / "results" / "cache.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        old = json.loads(out.read_text())
        results = old if "rows" not in old else {"tiny": old}
    except (OSError, ValueError):
        results = {}
    results[args.model] = {
        "rows": rows,
        "rerun_share": round(ratio, 4),
        "setup": setup,
        "date": time.strftime("%Y-%m-%d"),
    }
    from itool_core.artifacts import atomic_write_text

    atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
