"""How long ``make demo`` takes: the whole method (data → split → warm-up → 2 iterations of buffer, MCTS, DPO →
evaluation after every stage → report) on the embedded model, as a newcomer runs it.

It runs ``python -m flows.cli run --profile demo`` (what ``make demo`` runs) in a subprocess with a fresh
``ITOOL_HOME`` and ``PREFECT_HOME`` by default, so the first-run GGUF → safetensors conversion and a fresh Prefect
database are part of the time, and writes ``bench/results/run_demo.json`` (``run_<profile>.json`` with
``--profile``): the command, the machine, the date, the wall time in all and per stage, the peak memory, and
the scores per stage with n and the 95 % interval, the paired ``comparisons`` (stage a, stage b, category and a
``pooled`` row, n, Δ points, discordant counts, exact McNemar p), the compute-matched ``control``'s targets and
spent steps / tokens, where the time goes (``throughput``: per stage tokens processed and tokens/s; for the
training stages achieved FLOP/s against this machine's bf16 matmul peak, measured before the run by
bench/matmul_peak.py) and a copy of the run's score plot (``run_<profile>_scores.png``).  ``docs/RESULTS.md`` is
generated from these files (bench/results_page.py).  The goal the project holds the demo to is **≤ 10 min on 2
CPU cores**; the JSON says whether this run met it.

    python bench/pipeline_run.py                       # fresh home: what a new user's first `make demo` costs
    python bench/pipeline_run.py --home ~/.cache/itool # reuse a converted model (a second run, cached stages not reused
                                               # unless --run-dir is reused too)
    python bench/pipeline_run.py --profile proof --workdir ~/itool-proof   # the proof run → run_proof.json;
                                               # the same command again resumes it after an interruption
    python bench/pipeline_run.py --profile proof --set evaluation.split=dev   # tuning, on the dev items
                                               # → bench/results/dev/ (not on the results page)

Training FLOPs are estimated from the parameter count N and the training tokens: LoRA SFT 4N per token
(forward 2N, backward through the frozen weights 2N; the adapters' own gradients are negligible), a preference
update 6N per token (the same plus the reference model's forward) over the tokens its forwards ran
(``computed_tokens``: with ``preference.shared_prefix`` a pair's shared state counts once, while ``tokens`` and
tokens/s count both rows); attention's own FLOPs are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Wall-time goals per profile (issue: the demo ≤ 10 min, the proof run ≤ 2 h on 2 cores after install).
GOALS_S = {"demo": 10 * 60, "proof": 2 * 3600}
#: FLOPs per training token per parameter (module docstring).
FLOPS_PER_TOKEN = {"sft": 4, "preference": 6}


def machine(peak: bool = True) -> dict:
    """CPU model, cores, memory, Python and torch versions, bf16 / fp32 matmul peaks: what a timing depends on."""
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
        **(_peaks() if peak else {}),
    }


def _peaks() -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    from matmul_peak import matmul_peak

    return {f"{d}_matmul_flop_per_s": round(matmul_peak(d)) for d in ("bfloat16", "float32")}


def n_params(model_dir: str) -> int | None:
    """Parameters of the model in ``model_dir`` (counted on the meta device: nothing is loaded)."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
        return sum(p.numel() for p in model.parameters())
    except (OSError, ValueError):
        return None


def eval_tokens(eval_dir: str, model_dir: str) -> int | None:
    """Prompt + output tokens of an evaluation's items (its samples.parquet, re-tokenised)."""
    f = Path(eval_dir) / "samples.parquet"
    if not f.is_file():
        return None
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    t = pq.read_table(f, columns=["prompt", "output"]).to_pylist()
    return sum(len(tok(r["prompt"] or "", add_special_tokens=False)["input_ids"]) for r in t) + sum(
        len(tok(r["output"] or "", add_special_tokens=False)["input_ids"]) for r in t
    )


def throughput(summary: dict, peak: float | None) -> dict[str, dict]:
    """Per stage: tokens processed, compute seconds, tokens/s; training stages also FLOPs, FLOP/s and the share
    of the bf16 matmul ``peak``."""
    compute = summary.get("compute_s", {})
    model = summary["final_policy"]
    n = n_params(model)
    out: dict[str, dict] = {}
    for name, w in (summary.get("work") or {}).items():
        secs = w.get("seconds") or compute.get(name) or 0.0
        tokens = w.get("tokens", w.get("generated_tokens"))
        row: dict = {"seconds": round(secs, 1), "tokens": tokens}
        row.update({k: w[k] for k in ("steps", "pairs", "pairs_trained", "computed_tokens") if k in w})
        if "generated_tokens" in w:
            row["what"] = "generated tokens (search)"
        row["tokens_per_s"] = round(tokens / secs, 1) if tokens and secs else None
        kind = "preference" if name.endswith("/preference") else "sft" if "tokens" in w else None
        if kind and n and tokens and secs:
            flops = FLOPS_PER_TOKEN[kind] * n * w.get("computed_tokens", tokens)
            row.update(
                flops=flops, flop_per_s=round(flops / secs), peak_share=round(flops / secs / peak, 4) if peak else None
            )
        out[name] = row
    names = {"base": "eval_base", "sft": "eval_sft", "control": "eval_control"}
    it = 0
    for r in summary["rows"]:
        if r.get("kind") == "iteration":
            it += 1
        name = f"iter_{it}/eval" if r.get("kind") == "iteration" else names.get(r.get("kind", ""))
        if not name or name not in compute:
            continue
        tokens = eval_tokens(r["dir"], model)
        secs = compute[name]
        out[name] = {
            "seconds": round(secs, 1),
            "tokens": tokens,
            "what": "prompt + output tokens (evaluation)",
            "tokens_per_s": round(tokens / secs, 1) if tokens and secs else None,
        }
    return out


NOTES = {
    "demo": "demo budgets: the run shows the pipeline working and the warm-up learning the call format; with 10 "
    "items per category an interval spans about ±25 points, so only large differences (base → SFT) can show, "
    "not what the iterations add",
    "proof": "every stage on the same held-out test items; the dev items after them are for tuning (runs with "
    "--set evaluation.split=dev go to bench/results/dev/)",
}
#: The flow's stage lines in the run log (tasks/stages.py): ``[itool] iter_1/mine: done in 70 s``.
_DONE = re.compile(r"^\[itool\] (\S+): done in (\d+) s$", re.MULTILINE)


def logged_walls(log_text: str) -> dict[str, float]:
    """Each stage's wall time as the run log recorded it when the stage really ran (the last such line per
    stage): for a resumed run, the stages an earlier invocation finished are cached in this one and their
    cost is only in the log."""
    return {m.group(1): float(m.group(2)) for m in _DONE.finditer(log_text)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", help="ITOOL_HOME to use (default: a fresh temporary folder)")
    ap.add_argument("--profile", default="demo", help="profile to run (demo: what `make demo` runs)")
    ap.add_argument("--out", help="default bench/results/run_<profile>.json")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the 2-core goal)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override passed to `itool run` (e.g. evaluation.split=dev); with any, the JSON goes to "
        "bench/results/dev/ unless --out says otherwise (tuning runs are not results)",
    )
    ap.add_argument("--no-peak", action="store_true", help="skip the matmul peak measurement (a few seconds)")
    ap.add_argument(
        "--workdir",
        help="folder for the run, its MLflow and Prefect stores (default: a fresh temporary one); run again with "
        "the same folder to resume an interrupted run from its last finished stage (the JSON then says resumed)",
    )
    a = ap.parse_args(argv)
    mach = machine(peak=not a.no_peak)  # before the run: the peak of an otherwise idle machine

    if a.workdir:  # a long run (the proof) resumes there: its finished stages are cached in run/
        tmp = Path(a.workdir).expanduser().resolve()
        tmp.mkdir(parents=True, exist_ok=True)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="itool-demo-bench-"))
    resumed = (tmp / "run" / "config.yaml").is_file()
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
        *(x for kv in a.set for x in ("--set", kv)),
    ]
    env = {
        **os.environ,
        "ITOOL_HOME": str(home),
        "PREFECT_HOME": str(tmp / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": str(a.threads),
        "PYTHONUNBUFFERED": "1",  # the log shows the stage lines as they happen
    }
    env.pop("PREFECT_API_URL", None)  # a newcomer has no server: the flow starts its temporary one
    print(f"[bench] {' '.join(cmd)}  (ITOOL_HOME={home})", flush=True)
    log = tmp / f"{a.profile}.log"  # written as the run goes (`tail -f` it), appended to on a resume
    t0 = time.perf_counter()
    with log.open("a") as out:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, text=True, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    peak_file = tmp / "peak_rss_mb"  # a resumed run's peak is the largest of its invocations'
    if resumed and peak_file.is_file():
        peak_mb = max(peak_mb, float(peak_file.read_text()))
    peak_file.write_text(f"{peak_mb:.0f}\n")
    if proc.returncode != 0:
        print(log.read_text()[-8000:])
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
                "kind": row.get("kind", ""),
                "pairs": row.get("pairs"),
                "categories": {c: {k: v[k] for k in ("correct", "total", "accuracy", "ci95")} for c, v in cats.items()},
            }
        )
    if resumed:  # a cached stage cost nothing now: its wall is that of the invocation that ran it
        earlier = logged_walls(log.read_text(errors="replace"))
        stages = {k: earlier.get(k, v) if summary["states"].get(k) == "Cached" else v for k, v in stages.items()}
    top = {k: v for k, v in stages.items() if k.count("/") <= 1}  # mining's sub-steps are inside "iter_i/mine"
    # the goal is about one run: a resumed one is judged on its stages' walls summed over its invocations
    total = round(sum(top.values()) + wall - summary.get("flow_wall_s", 0.0), 1) if resumed else round(wall, 1)
    result = {
        "bench": "run",
        "profile": a.profile,
        "command": "make demo" if a.profile == "demo" else f"itool run --profile {a.profile}",
        "date": date.today().isoformat(),
        "machine": mach,
        "overrides": a.set,
        "fresh_home": a.home is None,
        # resumed: this invocation's wall time covers only the stages the earlier one(s) had not finished;
        # wall_s is then the sum of every stage's wall where it ran (from the run log) + this start-up
        "resumed": resumed,
        "wall_s": total,
        "invocation_wall_s": round(wall, 1),
        "flow_wall_s": round(summary.get("flow_wall_s", 0.0), 1),
        "startup_s": round(wall - summary.get("flow_wall_s", 0.0), 1),
        "goal_s": GOALS_S.get(a.profile),
        "goal_met": total <= GOALS_S[a.profile] if a.profile in GOALS_S else None,
        "peak_rss_mb": round(peak_mb),
        "stages_s": top,
        "states": summary["states"],
        "scores": scores,
        "comparisons": summary.get("comparisons", []),
        "control": summary.get("control"),
        "throughput": throughput(summary, mach.get("bfloat16_matmul_flop_per_s")),
        "subset": (summary["rows"][0]["summary"].get("subset") if summary["rows"] else None),
        "note": NOTES.get(a.profile, ""),
    }
    default_dir = ROOT / "bench" / "results" / ("dev" if a.set else "")
    out = Path(a.out or default_dir / f"run_{a.profile}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    png = Path(summary["plot"])
    if png.is_file():
        import shutil

        result["plot"] = out.with_name(out.stem + "_scores.png").name
        shutil.copyfile(png, out.with_name(result["plot"]))
    sys.path.insert(0, str(ROOT))
    from itool_core.artifacts import atomic_write_json

    atomic_write_json(out, result)
    print(f"\n{'stage':<22} {'wall s':>8}")
    for k, v in top.items():
        print(f"{k:<22} {v:>8.1f}")
    print(f"{'(start-up, imports)':<22} {result['startup_s']:>8.1f}")
    goal = (
        ""
        if result["goal_s"] is None
        else f"   goal ≤ {result['goal_s']} s: {'met' if result['goal_met'] else 'NOT met'}"
    )
    resumed_note = f"  (resumed: stage walls of every invocation; this one took {wall:.0f} s)" if resumed else ""
    print(f"{'total':<22} {total:>8.1f}{goal}{resumed_note}")
    if result["throughput"]:
        print(f"\n{'stage':<22} {'tokens':>9} {'tokens/s':>9} {'GFLOP/s':>9} {'of peak':>8}")
        for k, v in result["throughput"].items():
            gf = f"{v['flop_per_s'] / 1e9:.1f}" if v.get("flop_per_s") else "-"
            share = f"{100 * v['peak_share']:.1f} %" if v.get("peak_share") else "-"
            print(f"{k:<22} {v['tokens'] or '-':>9} {v['tokens_per_s'] or '-':>9} {gf:>9} {share:>8}")
        pk = mach.get("bfloat16_matmul_flop_per_s")
        if pk:
            print(f"bf16 matmul peak: {pk / 1e9:.0f} GFLOP/s (bench/matmul_peak.py)")
    print(f"peak RSS {result['peak_rss_mb']} MB; written {out}; log {log}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
