"""Stage caching, measured: wall time of the ``itool`` flow on a first run, on an unchanged re-run (every stage
``Cached``) and after changing only the evaluation settings (only the two evaluations re-run).

Runs the flow on the tiny random model and the tiny data set of tests/test_loop.py (1 iteration, the tiny
budgets of tests/test_flows.py), in a temporary folder with a temporary Prefect home, MLflow in SQLite there.
Prints a table and writes ``bench/results/cache.json``.

    .venv/bin/python bench/cache.py            # ≈ 2 min on 2 CPU cores
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="itool-cache-bench-"))
    os.environ.setdefault("PREFECT_HOME", str(tmp / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the tiny data set and parameters live with the tests

    from test_flows import _params
    from test_loop import _data

    from flows.iterate import iterate
    from itool_core.artifacts import write_table
    from itool_core.models import save_policy, tiny_model
    from itool_core.schemas import EXAMPLES

    model, tok = tiny_model(seed=0)
    tiny_dir = str(save_policy(model, tok, tmp / "tiny"))
    data = write_table([e.to_row() for e in _data()], tmp / "data.parquet", EXAMPLES)
    params = _params(tiny_dir, data.path, tmp / "run", f"sqlite:///{tmp / 'mlflow.db'}")
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
        rows.append({"run": label, "wall_s": round(wall, 1), "stages_wall_s": round(stages_s, 1),
                     "ran": res["ran"], "cached": res["cached"]})
        print(f"[bench] {label}: {wall:.1f}s ({len(res['ran'])} ran, {len(res['cached'])} cached)", flush=True)

    print("\n| run | flow wall (s) | stage tasks (s) | stages ran | stages cached |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['wall_s']} | {r['stages_wall_s']} | {len(r['ran'])} | {len(r['cached'])} |")
    print("\nflow wall includes MLflow run creation and logging (not the temporary server start); tiny model, "
          "1 iteration, eval limit 1.")
    out = ROOT / "bench" / "results" / "cache.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "setup": "tiny model, tests/test_loop.py data, 1 iteration, "
                                                      "tests/test_flows.py budgets"}, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
