"""Generate ``docs/RESULTS.md`` from the runs' JSON (``bench/results/run_<profile>.json``, written by
bench/pipeline_run.py): one section per profile — stages × categories with n and 95 % intervals, the score plot,
the paired comparisons (per category and pooled, exact McNemar p), the compute-matched control's matching rule
with its target and spent steps / tokens, the wall time per stage and where it goes (tokens/s, training FLOP/s
against the measured bf16 matmul peak), the hardware, the date and the command of each run.  The page is never
edited by hand; the lab notebook (measurement history, investigations) is ``docs/notebook/RESULTS.md``.

    python bench/results_page.py            # rewrite docs/RESULTS.md
    python bench/results_page.py --check    # exit 1 if the page is not what the JSON gives (CI / tests)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PAGE = ROOT / "docs" / "RESULTS.md"


def _cell(v: dict | None) -> str:
    if not v or not v.get("total"):
        return "-"
    lo, hi = v["ci95"]
    return f"{100 * v['correct'] / v['total']:.0f} [{100 * lo:.0f}–{100 * hi:.0f}]"


def run_section(run: dict) -> str:
    m = run["machine"]
    cats: list[str] = []
    for s in run["scores"]:
        cats += [c for c in s["categories"] if c not in cats]
    ns = {c: sorted({s["categories"][c]["total"] for s in run["scores"] if c in s["categories"]}) for c in cats}
    head = ["stage"] + [f"{c} (n={'/'.join(map(str, ns[c]))})" for c in cats] + ["pairs"]
    subset = f" ({run['subset']})" if run.get("subset") else ""
    lines = [
        f"## Profile `{run['profile']}`",
        "",
        f"Command: `{run['command']}` · date {run['date']} · {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gib']} GiB, GPU: {'yes' if m.get('gpu') else 'no'} (torch {m['torch']}) · "
        f"{'fresh ITOOL_HOME (first-run model conversion included)' if run.get('fresh_home') else 'warm home'}",
        "",
        f"Accuracy % [95 % Wilson interval]; every stage on the same seeded items{subset}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for s in run["scores"]:
        row = (
            [s["stage"]]
            + [_cell(s["categories"].get(c)) for c in cats]
            + ["-" if s.get("pairs") is None else str(s["pairs"])]
        )
        lines.append("| " + " | ".join(row) + " |")
    if run.get("plot"):
        lines += ["", f"![scores per stage, profile {run['profile']}](../bench/results/{run['plot']})"]
    lines += _verdict(run) + _comparisons(run) + _control(run) + _diagnosis(run)
    goal = ""
    if run.get("goal_s"):
        goal = f" — goal ≤ {run['goal_s'] / 60:.0f} min: **{'met' if run['goal_met'] else 'not met'}**"
    lines += [
        "",
        f"Wall time: **{run['wall_s'] / 60:.1f} min** in all{goal}; peak RSS {run['peak_rss_mb']} MB."
        + (
            f" Resumed after an interruption: the total is each stage's wall where it ran (run log) plus start-up; "
            f"the last invocation took {run['invocation_wall_s'] / 60:.1f} min."
            if run.get("resumed") and "invocation_wall_s" in run
            else ""
        ),
        "",
        "| stage | wall s |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.0f} |" for k, v in run["stages_s"].items()]
    lines.append(f"| start-up (Prefect server, imports) | {run['startup_s']:.0f} |")
    lines += _throughput(run)
    if run.get("note"):
        lines += ["", f"_{run['note']}_"]
    return "\n".join(lines)


def _p(p: float) -> str:
    return f"{p:.2f}" if p >= 0.01 else f"{p:.1e}"


def _comparisons(run: dict) -> list[str]:
    rows = run.get("comparisons") or []
    if not rows:
        return []
    out = [
        "",
        "Paired comparisons on the same items (B vs A; Δ = B − A in points; discordant items: right only in A / "
        "only in B; exact McNemar p; **pooled** = all items of the categories both were scored on):",
        "",
        "| B vs A | category | n | Δ points | only A / only B | McNemar p |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cat = "**pooled**" if r["category"] == "pooled" else r["category"]
        out.append(
            f"| {r['b']} vs {r['a']} | {cat} | {r['n']} | {r['delta_points']:+.0f} | "
            f"{r['a_only']} / {r['b_only']} | {_p(r['p_value'])} |"
        )
    return out


def _pooled(run: dict, a: str, b: str) -> dict | None:
    return next(
        (r for r in run.get("comparisons") or [] if r["a"] == a and r["b"] == b and r["category"] == "pooled"), None
    )


def _verdict(run: dict) -> list[str]:
    """The goals of the run's profile, said plainly either way: :func:`_proof_verdict` or :func:`_demo_verdict`."""
    if run.get("profile") == "demo":
        return _demo_verdict(run)
    if run.get("profile") == "proof":
        return _proof_verdict(run)
    return []


def _demo_verdict(run: dict) -> list[str]:
    """``make demo``'s goals: SFT ≥ base + 20 points pooled, every iteration trains on ≥ 8 pairs, ≤ 10 min."""
    kinds = {s.get("kind"): s["stage"] for s in run["scores"]}
    out = ["", "**Goals of the demo:**", ""]
    r = _pooled(run, kinds.get("base", ""), kinds.get("sft", ""))
    if r is not None:
        out.append(
            f"- SFT − base, pooled over {r['n']} items: {r['delta_points']:+.0f} points (p = {_p(r['p_value'])}) — "
            f"goal ≥ +20: **{'met' if r['delta_points'] >= 20 else 'not met'}**."
        )
    trained = [v["pairs_trained"] for k, v in (run.get("throughput") or {}).items() if k.endswith("/preference")]
    if trained:
        out.append(
            f"- pairs trained per iteration: {', '.join(f'{t:.0f}' for t in trained)} — goal ≥ 8: "
            f"**{'met' if min(trained) >= 8 else 'not met'}**."
        )
    if run.get("goal_s"):
        out.append(
            f"- wall time {run['wall_s'] / 60:.1f} min — goal ≤ {run['goal_s'] / 60:.0f} min: "
            f"**{'met' if run['goal_met'] else 'not met'}**."
        )
    return out if len(out) > 3 else []


def _proof_verdict(run: dict) -> list[str]:
    """The proof run's targets, read off the comparisons: SFT above base (p < 0.05) in ≥ 3 categories; the final
    iTool stage above SFT and above the control, pooled, p < 0.05."""
    kinds = {s.get("kind"): s["stage"] for s in run["scores"]}
    final = next((s["stage"] for s in reversed(run["scores"]) if s.get("kind") == "iteration"), None)
    if "sft" not in kinds or final is None:
        return []
    out = ["", "**Verdict** (targets of the method; exact McNemar p on the paired items):", ""]
    if "base" in kinds:
        won = [
            r["category"]
            for r in run.get("comparisons") or []
            if r["a"] == kinds["base"]
            and r["b"] == kinds["sft"]
            and r["category"] != "pooled"
            and r["delta_points"] > 0
            and r["p_value"] < 0.05
        ]
        out.append(
            f"- SFT above base with p < 0.05 in {len(won)} categor{'y' if len(won) == 1 else 'ies'}"
            f"{' (' + ', '.join(won) + ')' if won else ''} — target ≥ 3: **{'met' if len(won) >= 3 else 'not met'}**."
        )
    for other in [kinds["sft"]] + ([kinds["control"]] if "control" in kinds else []):
        r = _pooled(run, other, final)
        if r is None:
            continue
        met = r["delta_points"] > 0 and r["p_value"] < 0.05
        out.append(
            f"- {final} vs {other}, pooled over {r['n']} items: {r['b_correct']} vs {r['a_correct']} right "
            f"({r['delta_points']:+.1f} points, p = {_p(r['p_value'])}) — target: above with p < 0.05: "
            f"**{'met' if met else 'not met'}**."
        )
    return out


def _diagnosis(run: dict) -> list[str]:
    """bench/proof_diagnosis.py's tables for this profile's run: pairs and their Q gaps, the DPO updates, held-out
    pair accuracy, answer kinds per stage."""
    path = RESULTS / f"{run['profile']}_diagnosis.json"
    if not path.is_file():
        return []
    d = json.loads(path.read_text())
    out = [
        "",
        f"**Diagnosis** (`{d['command']}`, {d['date']}; log-probs in {d['logprob_precision']}). Pairs mined per "
        "iteration (Q = r + γV of the search), and the DPO update as logged on its own pairs:",
        "",
        "| iteration | pairs | Q chosen / rejected (mean) | Q gap mean / median / min | chosen is no-call | "
        "rejected is no-call | update | steps | reward margin (mean / last) | pair accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for it in d["iterations"]:
        p, u = it["pairs"], it["update"]
        out.append(
            f"| {it['iteration']} | {p['n']} | {p['q_chosen_mean']:.2f} / {p['q_rejected_mean']:.2f} | "
            f"{p['q_gap_mean']:.2f} / {p['q_gap_median']:.2f} / {p['q_gap_min']:.2f} | {p['chosen_no_call']} | "
            f"{p['rejected_no_call']} | {u['loss']} β {u['beta']} | {u['steps']} | "
            f"{u['margin_mean']:.3f} / {u['margin_last']:.3f} | {u['accuracy_mean']:.2f} |"
        )
    if d.get("heldout"):
        out += [
            "",
            "Implicit reward β·[log π(y) − log π_ref(y)] of each update against the policy it started from, on every "
            "iteration's pairs (held out = pairs that update did not train on); accuracy = share of pairs with "
            "r(chosen) > r(rejected):",
            "",
            "| update | pairs of | held out | n | accuracy | mean margin |",
            "|---|---|---|---|---|---|",
        ]
        out += [
            f"| {h['update']} | {h['pairs_of']} | {'yes' if h['held_out'] else 'no (trained on)'} | {h['n']} | "
            f"{h['accuracy']:.2f} | {h['margin_mean']:+.3f} |"
            for h in d["heldout"]
        ]
    kinds = d.get("answer_kinds") or {}
    cats = sorted({c for k in kinds.values() for c in k})
    if cats:
        out += [
            "",
            "Answers by kind per stage — call / no call / broken call list (BFCL categories):",
            "",
            "| stage | " + " | ".join(cats) + " |",
            "|---|" + "---|" * len(cats),
        ]
        for label, k in kinds.items():
            cells = [f"{k[c]['call']} / {k[c]['no_call']} / {k[c]['broken_call']}" if c in k else "-" for c in cats]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


def _control(run: dict) -> list[str]:
    c = run.get("control")
    if not c:
        return []
    t, s = c["target"], c["spent"]
    ratio = s["tokens"] / t["tokens"] if t.get("tokens") else 0.0
    return [
        "",
        "**Compute-matched control.** The SFT policy trained further with plain SFT (the warm-up's settings) on the "
        "pool, for exactly the optimiser steps S the iterations' preference updates took, with b = round(T / (S · "
        "mean tokens of a pool example)) examples per step so that it feeds about the T training tokens those "
        f"updates fed through the policy. Target: {t['steps']} steps, {t['tokens']} tokens; spent: {s['steps']} "
        f"steps, {s['tokens']} tokens ({ratio:.2f} × the target; batch {c.get('batch_size', 0):.0f}).",
    ]


def _throughput(run: dict) -> list[str]:
    tp = run.get("throughput") or {}
    if not tp:
        return []
    peak = run["machine"].get("bfloat16_matmul_flop_per_s")
    out = [
        "",
        "Where the time goes (compute seconds of the stage; training FLOPs estimated as 4N per token for LoRA SFT, "
        "6N per token a preference update's forwards ran — a pair's shared state once, `preference.shared_prefix`"
        + (f"; bf16 matmul peak measured before the run: {peak / 1e9:.0f} GFLOP/s" if peak else "")
        + "):",
        "",
        "| stage | s | tokens | tokens/s | GFLOP/s | of bf16 peak |",
        "|---|---|---|---|---|---|",
    ]
    for k, v in tp.items():
        gf = f"{v['flop_per_s'] / 1e9:.1f}" if v.get("flop_per_s") else "-"
        share = f"{100 * v['peak_share']:.1f} %" if v.get("peak_share") else "-"
        tok = "-" if v.get("tokens") is None else f"{v['tokens']:.0f}"
        tps = "-" if v.get("tokens_per_s") is None else f"{v['tokens_per_s']:.0f}"
        out.append(f"| {k} | {v['seconds']:.0f} | {tok} | {tps} | {gf} | {share} |")
    return out


def preference_section(runs: list[dict]) -> str:
    """``bench/preference_speed.py``: the preference update with and without prefix sharing."""
    out = [
        "## Preference update: prefix sharing",
        "",
        "`bench/preference_speed.py` trains the same policy on the same mined pairs twice, trl's two rows per pair "
        "(`shared_prefix: false`) and one row per pair with the shared state encoded once (`true`, the default; "
        'docs/design.md, "Training on CPU"); FLOPs = 6N per token the forwards ran.',
        "",
        "| run | machine, date | precision | steps | shared | s/step | tokens | computed | tokens/s | GFLOP/s | "
        "of bf16 peak | losses per step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        where = f"{r['machine'].get('cpu')}, {r['machine'].get('cores')} cores, {r['date']}"
        prec = "bf16 autocast" if r.get("bf16") not in (False, "false") else "fp32"
        for row in r["rows"]:
            out.append(
                f"| `{r['command']}` | {where} | {prec} | {row['steps']} | {row['shared_prefix']} | "
                f"{row['s_per_step']:.2f} | {row['tokens']} | {row['computed_tokens']} | {row['tokens_per_s']:.0f} | "
                f"{row['flop_per_s'] / 1e9:.1f} | {100 * row['peak_share']:.1f} % | "
                + " ".join(f"{x:.5f}" for x in row["losses"])
                + " |"
            )
        out.append(f"| | | | | speed-up | **{r['speedup']:.2f}×** | | | | | | |")
    return "\n".join(out)


def _spread(v: dict) -> str:
    return f"{v['median']:.2f}× [{v['min']:.2f}–{v['max']:.2f}]"


def serve_section(run: dict) -> str:
    """``bench/results/serve_speed.json`` (bench/serve_speed.py): the served engine against the transformers one."""
    a, s = run["args"], run["summary"]
    goals = {
        "mining_trees_per_min_ratio": "≥ 3×",
        "served_mining_vs_served_raw_tokens_per_s": "≥ 0.70×",
    }
    names = {
        "mining_trees_per_min_ratio": "mining trees/min, served ÷ transformers",
        "mining_tokens_per_s_ratio": "mining generated tokens/s, served ÷ transformers",
        "raw_tokens_per_s_ratio": "raw batched decode tokens/s, served ÷ transformers",
        "eval_items_per_min_ratio": "evaluation items/min, served ÷ transformers",
        "served_mining_vs_served_raw_tokens_per_s": "served mining tokens/s ÷ served raw decode tokens/s",
    }
    lines = [
        "## Served engine (llama-server) vs transformers engine",
        "",
        f"Command: `{run['command']}` · date {run['date']} · {run['machine']}, {run['cores']} cores · "
        f"load average at the end {run['load_average_end'][0]:.1f}.",
        "",
        f"Same {run['n_trees']} BFCL simple_python trees × {a['simulations']} simulations, k = {a['k']}, seed 0, "
        f"and the same {run['n_eval_items']} evaluation items on both engines; GGUF {a['dtype']}, {a['slots']} "
        f"slots, {a['threads']} threads. Each cell: median over {s['mining_trees_per_min_ratio']['n_repeats']} "
        "repeats (engines back to back, order alternating) [min–max of the paired ratios].",
        "",
        "| ratio | value | goal |",
        "|---|---|---|",
    ]
    lines += [f"| {names[k]} | {_spread(s[k])} | {goals.get(k, '')} |" for k in names if k in s]
    lines += [
        "",
        f"Server start-up (incl. writing the GGUF where not cached): {s['server_startup_seconds_incl_gguf']:.1f} s. "
        "The two engines' trees are not token-identical (different samplers), so trees/min also varies with how "
        "long the sampled steps are; tokens/s is the like-for-like number.",
    ]
    return "\n".join(lines)


def engines_section(run: dict) -> str:
    """``bench/results/serve_speed.json`` of issue #32's bench: every engine on the same work, the roofline."""
    a, s = run["args"], run["summary"]
    ratios, peaks = s.get("ratios_to_transformers", {}), s["machine_peaks"]
    roofs = s["roofline_per_engine"]

    def cell(d: dict | None) -> str:
        return _spread(d) if d else "–"

    lines = [
        "## Every engine on the same work",
        "",
        f"Command: `{run['command']}` · date {run['date']} · {run['machine']}, {run['cores']} cores · "
        f"load average at the end {run['load_average_end'][0]:.1f}.",
        "",
        f"{run['n_trees']} BFCL simple_python trees × {a['simulations']} simulations, k = {a['k']}, seed 0, "
        f"{run['n_eval_items']} evaluation items, {a['threads']} threads, {a['slots']} slots; vLLM weights "
        f"{a.get('vllm_dtype', 'auto')}. This machine, measured before the engines started (best of 3): "
        f"{peaks['read_bandwidth_GBps']:.1f} GB/s read, {peaks['matmul_GFLOPps_f32']:.0f} GFLOP/s f32 and "
        f"{peaks['matmul_GFLOPps_bf16']:.0f} GFLOP/s bf16 matmul. **Roofline share** = the least time a raw row's "
        "work needs here (its prompts' prefill + its decode at the matmul peak of the engine's precision, or one read "
        "of the weights per decode step, whichever is longer) ÷ the time it took; the decode-only ceiling at batch "
        + ", ".join(f"{n} {r['tokens_per_s']:.0f} tokens/s ({r['weights']})" for n, r in roofs.items())
        + " ignores the prefill. Goals (issue #32): mining tokens/s ≥ 2.5× transformers, ≥ 50 % of the roofline. "
        "Each cell: median [min–max] over the repeats (ratios paired by repeat).",
        "",
        "| engine | start-up s (share of the bench) | raw row ÷ roofline | mining tok/s ÷ transformers "
        "| mining trees/min ÷ transformers | raw tok/s ÷ transformers | eval items/min ÷ transformers |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, secs in s["startup_seconds"].items():
        r = ratios.get(name, {})
        lines.append(
            f"| {name} | {secs:.0f} ({100 * s['startup_share_of_wall'][name]:.0f} %) "
            f"| {cell(s['raw_share_of_roofline'].get(name))} | {cell(r.get('mining_tokens_per_s'))} "
            f"| {cell(r.get('mining_trees_per_min'))} | {cell(r.get('raw_tokens_per_s'))} "
            f"| {cell(r.get('eval_items_per_min'))} |"
        )
    return "\n".join(lines)


def render() -> str:
    runs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("run_*.json"))]
    order = {"demo": 0, "proof": 1, "quick": 2, "paper": 3}
    runs.sort(key=lambda r: (order.get(r["profile"], 9), r["profile"]))
    parts = [
        "# Results",
        "",
        "Generated by `python bench/results_page.py` from `bench/results/run_<profile>.json` "
        "(`python bench/pipeline_run.py --profile P`) and `bench/results/serve_speed.json` "
        "(`python bench/serve_speed.py`); do not edit by hand. Measurement history and "
        "investigations: [docs/notebook/RESULTS.md](notebook/RESULTS.md).",
        "",
    ]
    if not runs:
        parts.append("_No run recorded yet._")
    parts += [run_section(r) + "\n" for r in runs]
    pref = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("preference_speed*.json"))]
    if pref:
        parts.append(preference_section(pref) + "\n")
    serve = RESULTS / "serve_speed.json"
    if serve.is_file():
        served = json.loads(serve.read_text())
        if "ratios_to_transformers" in served["summary"]:
            parts.append(engines_section(served) + "\n")
        if "mining_trees_per_min_ratio" in served["summary"]:  # llama-server against transformers (issue #23)
            parts.append(serve_section(served) + "\n")
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/RESULTS.md differs from the JSON")
    a = ap.parse_args(argv)
    text = render()
    if a.check:
        ok = PAGE.is_file() and PAGE.read_text() == text
        print("docs/RESULTS.md is up to date" if ok else "docs/RESULTS.md differs: run python bench/results_page.py")
        return 0 if ok else 1
    sys.path.insert(0, str(ROOT))
    from itool_core.artifacts import atomic_write_text

    atomic_write_text(PAGE, text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
