"""How a warmed-up model decides between a call and "no call": first-answer-token odds, bias vs discrimination.

The first token of an answer is the decision — "[" opens a call list, "None" opens the no-call sentence
(``itool_core.calls.NO_CALL_TEXT``).  For each group of prompts the script measures, at the first answer
position, p("None"), p("["), how often "None" is the more likely of the two (what greedy decoding will say),
and the log-odds ``log p("None") − log p("[")``.  Two numbers then separate the two ways abstention can fail:

* **bias** — where the log-odds sit: on no-call prompts they must be > 0 for greedy decoding to abstain;
* **discrimination** — how well the log-odds rank no-call prompts above call prompts, threshold-free: the
  AUROC (Mann–Whitney) of BFCL irrelevance against BFCL simple + multiple, of the training set's no-call
  against its call examples (prompts the model was trained on), and of the held-out pool's (the same
  distribution, never trained on in the warm-up: ``out/data/pool.parquet``).  0.5 = blind, 1.0 = a threshold
  exists that separates them perfectly.  Training vs pool separates memorising from learning the decision;
  pool vs BFCL separates learning it from transferring it to BFCL's questions.

A model with AUROC near 1 and negative log-odds everywhere is under-trained on the decision's bias (more weight
on it may fix it); AUROC near 0.5 means it cannot tell the questions apart, and no bias setting will help.

    .venv/bin/python bench/decision_probe.py --model runs/sft_ex/merged --data runs/sft_ex/data --n 16 \\
        --json bench/results/decision_probe_ex.json

Prompts are rendered exactly as training and evaluation render them (``render_prompt``, ``--tools``).  Cost:
one forward pass per prompt (≈ 0.2–0.5 s each for SmolLM2-135M on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from itool_core.artifacts import atomic_write_text, read_table  # noqa: E402
from itool_core.calls import NO_CALL_TEXT, PromptStyle, render_prompt  # noqa: E402
from itool_core.data.records import Example  # noqa: E402
from itool_core.models import DEFAULT_MODEL  # noqa: E402
from itool_core.schemas import EXAMPLES  # noqa: E402

STAGES = ("easy", "medium", "hard")


def auroc(pos: list[float], neg: list[float]) -> float | None:
    """P(score of a random positive > score of a random negative), ties counted half (Mann–Whitney U)."""
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def auroc_se(a: float | None, n_pos: int, n_neg: int) -> float | None:
    """Hanley & McNeil (1982) standard error of an AUROC ``a`` from ``n_pos`` positives and ``n_neg`` negatives
    — at 30 irrelevance against 60 call questions it is ≈ 0.06, so only differences of ~0.15 mean anything."""
    if a is None or not n_pos or not n_neg:
        return None
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def first_token_ids(tok) -> tuple[int, int]:
    none_id = tok(NO_CALL_TEXT, add_special_tokens=False).input_ids[0]
    bracket_id = tok("[", add_special_tokens=False).input_ids[0]
    return none_id, bracket_id


def probe(model, tok, exs: list[Example], style: PromptStyle) -> list[dict]:
    """Per prompt: p("None"), p("[") and their log-odds at the first answer position."""
    import torch

    none_id, bracket_id = first_token_ids(tok)
    out = []
    for ex in exs:
        ids = tok(
            render_prompt(tok, ex.tools, ex.messages, style), return_tensors="pt", add_special_tokens=False
        ).input_ids
        with torch.no_grad():
            lp = model(ids).logits[0, -1].float().log_softmax(-1)
        out.append(
            {
                "id": ex.id,
                "source": ex.source,
                "p_none": lp[none_id].exp().item(),
                "p_bracket": lp[bracket_id].exp().item(),
                "log_odds": (lp[none_id] - lp[bracket_id]).item(),
            }
        )
    return out


def summarise(name: str, rows: list[dict]) -> dict:
    n = len(rows)
    return {
        "group": name,
        "n": n,
        "p_none": sum(r["p_none"] for r in rows) / n,
        "p_bracket": sum(r["p_bracket"] for r in rows) / n,
        "none_wins": sum(r["log_odds"] > 0 for r in rows),
        "log_odds_mean": sum(r["log_odds"] for r in rows) / n,
    }


def source_row(no_call: list[float], call: list[float]) -> dict:
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    a = auroc(no_call, call)
    return {
        "n_no_call": len(no_call),
        "n_call": len(call),
        "log_odds_no_call": mean(no_call),
        "log_odds_call": mean(call),
        "auroc": a,
        "auroc_se": auroc_se(a, len(no_call), len(call)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--model", default=DEFAULT_MODEL, help="model folder (itool warmup's out/merged), hub id or embedded name"
    )
    ap.add_argument("--adapter", default=None, help="a LoRA adapter on --model (e.g. a warm-up stage_* folder)")
    ap.add_argument(
        "--data",
        default=None,
        help="the warm-up's split folder (out/data: easy/medium/hard.parquet); omit to probe BFCL only",
    )
    ap.add_argument("--n", type=int, default=16, help="training prompts per stage and kind (no-call / call)")
    ap.add_argument(
        "--pool-n",
        type=int,
        default=200,
        help="held-out pool prompts per kind (no-call / call), from --data's pool.parquet (0: skip)",
    )
    ap.add_argument("--bfcl-n", type=int, default=50, help="seeded BFCL questions per category")
    ap.add_argument("--tools", default="compact", choices=["json", "compact"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the table and per-prompt values here")
    args = ap.parse_args(argv)

    import torch

    from itool_core.data.bfcl import load_bfcl
    from itool_core.eval.bfcl import stable_subset
    from itool_core.models import load_policy

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, tok = load_policy(args.model, adapter=args.adapter, dtype="float32")
    style = PromptStyle(tools=args.tools)

    groups: dict[str, list[dict]] = {}
    if args.data:
        for stage in STAGES:
            exs = [Example.from_row(r) for r in read_table(Path(args.data) / f"{stage}.parquet", EXAMPLES).to_pylist()]
            groups[f"train no-call {stage}"] = probe(model, tok, [e for e in exs if not e.target][: args.n], style)
            groups[f"train call {stage}"] = probe(model, tok, [e for e in exs if e.target][: args.n], style)
        pool_file = Path(args.data) / "pool.parquet"
        if pool_file.is_file() and args.pool_n:
            exs = [Example.from_row(r) for r in read_table(pool_file, EXAMPLES).to_pylist()]
            groups["pool no-call"] = probe(model, tok, [e for e in exs if not e.target][: args.pool_n], style)
            groups["pool call"] = probe(model, tok, [e for e in exs if e.target][: args.pool_n], style)
    bfcl = stable_subset(load_bfcl(["irrelevance", "simple_python", "multiple"]), args.bfcl_n, 0)
    for cat in ("irrelevance", "simple_python", "multiple"):
        groups[f"BFCL {cat}"] = probe(model, tok, [e for e in bfcl if e.category == cat], style)

    def scores(prefix: str) -> list[float]:
        return [r["log_odds"] for g, rows in groups.items() if g.startswith(prefix) for r in rows]

    table = [summarise(g, rows) for g, rows in groups.items() if rows]
    bfcl_pos, bfcl_neg = scores("BFCL irrelevance"), scores("BFCL simple_python") + scores("BFCL multiple")
    train_pos, train_neg = scores("train no-call"), scores("train call")
    pool_pos, pool_neg = scores("pool no-call"), scores("pool call")
    # Per source over the training + pool prompts: is the prompt's style (BFCL's vs API-Bank's) a cue?
    by_source: dict[str, dict] = {}
    for g, rows in groups.items():
        if g.startswith(("train", "pool")):
            for r in rows:
                kind = "no_call" if "no-call" in g else "call"
                by_source.setdefault(r["source"], {"no_call": [], "call": []})[kind].append(r["log_odds"])
    source_table = {src: source_row(v["no_call"], v["call"]) for src, v in sorted(by_source.items())}
    auroc_bfcl, auroc_train = auroc(bfcl_pos, bfcl_neg), auroc(train_pos, train_neg)
    auroc_pool = auroc(pool_pos, pool_neg)
    result = {
        "date": date.today().isoformat(),
        "machine": platform.processor() or platform.machine(),
        "model": args.model,
        "adapter": args.adapter,
        "data": args.data,
        "tools": args.tools,
        "seconds": round(time.perf_counter() - t0, 1),
        "table": table,
        "auroc_bfcl": auroc_bfcl,
        "auroc_bfcl_se": auroc_se(auroc_bfcl, len(bfcl_pos), len(bfcl_neg)),
        "auroc_train": auroc_train,
        "auroc_train_se": auroc_se(auroc_train, len(train_pos), len(train_neg)),
        "auroc_pool": auroc_pool,
        "auroc_pool_se": auroc_se(auroc_pool, len(pool_pos), len(pool_neg)),
        "by_source": source_table,
        "prompts": groups,
    }
    print(f"{'prompts':26s} {'n':>4s} {'p(None)':>8s} {'p([)':>7s} {'None wins':>10s} {'log-odds':>9s}")
    for row in table:
        print(
            f"{row['group']:26s} {row['n']:4d} {row['p_none']:8.3f} {row['p_bracket']:7.3f} "
            f"{row['none_wins']:>5d}/{row['n']:<4d} {row['log_odds_mean']:9.2f}"
        )
    for src, row in source_table.items():
        lo = " / ".join("-" if x is None else f"{x:.2f}" for x in (row["log_odds_no_call"], row["log_odds_call"]))
        a = "n/a" if row["auroc"] is None else f"{row['auroc']:.3f} ± {row['auroc_se']:.3f}"
        print(
            f"source {src:19s} no-call {row['n_no_call']:3d} / call {row['n_call']:3d}  mean log-odds {lo}  AUROC {a}"
        )

    def fmt(key: str) -> str:
        v, se = result[key], result[key + "_se"]
        return "n/a" if v is None else f"{v:.3f} ± {se:.3f}"

    print(
        f"AUROC (log-odds, ± Hanley-McNeil SE) BFCL irrelevance vs simple+multiple: {fmt('auroc_bfcl')}; "
        f"training no-call vs call: {fmt('auroc_train')}; held-out pool no-call vs call: {fmt('auroc_pool')}  "
        f"({result['seconds']} s)"
    )
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
