"""Evaluation entry point: BFCL v3 (paper Table 1) and API-Bank L1/L2 (Table 2) on any model or engine.

``evaluate(engine_or_model, ...)`` takes anything implementing the engine protocol
(:mod:`itool_core.engines.base`), a ``(model, tokenizer)`` pair, or a model name/path (+ LoRA ``adapter``);
loads the benchmark examples through :func:`itool_core.data.loaders.load`; optionally keeps a seeded, stable
subset of ``limit`` examples per category (:func:`itool_core.eval.bfcl.stable_subset`); generates greedily
and scores:

* BFCL single-turn with bfcl-eval's AST checker / relevance rule (:mod:`itool_core.eval.bfcl`),
* BFCL multi-turn by running the conversation against bfcl-eval's simulators and its ``multi_turn_checker``
  (:mod:`itool_core.eval.bfcl_multi_turn`),
* API-Bank L1/L2 call accuracy (:mod:`itool_core.eval.apibank`).

It writes, under ``out_dir``: ``samples.parquet`` (one row per item, schema ``eval_samples/1``: id, benchmark,
category, prompt, raw output, parsed calls as JSON, valid, error, error type) through
:func:`itool_core.artifacts.write_table`, and ``summary.json`` (atomic), and returns the summary dict.
:func:`format_tables` prints it in the layout of the paper's Table 1 and Table 2.  Every number of a subset
run is labelled with the subset size and seed (``summary["subset"]``).

``itool eval`` (:mod:`itool_core.cli.eval`) is this function on the command line.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import pyarrow as pa

from ..artifacts import atomic_write_json, write_table
from ..calls import PromptStyle, calls_to_json
from ..config import APIBANK_EVAL_CATEGORIES
from ..data.records import Example
from ..engines.base import GenerationParams
from ..schemas import TableSchema, register
from . import apibank as ab
from . import bfcl as bf
from .stats import wilson
from .bfcl_multi_turn import MAXIMUM_STEP_LIMIT, run_multi_turn

log = logging.getLogger(__name__)

__all__ = ["EVAL_SAMPLES", "BENCHMARKS", "evaluate", "format_tables", "as_engine"]

BENCHMARKS = ("bfcl", "apibank")
APIBANK_CATEGORIES = APIBANK_EVAL_CATEGORIES

EVAL_SAMPLES = register(
    TableSchema(
        "eval_samples",
        1,
        pa.schema(
            [
                pa.field("id", pa.string(), nullable=False),
                pa.field("benchmark", pa.string(), nullable=False),  # bfcl | apibank
                pa.field("category", pa.string(), nullable=False),
                pa.field("prompt", pa.string(), nullable=False),  # multi-turn: the prompt of turn 0
                pa.field("output", pa.string(), nullable=False),  # multi-turn: JSON [[text per step] per turn]
                pa.field("calls", pa.string(), nullable=False),  # JSON calls decoded by our parser; "null" = no parse
                pa.field("valid", pa.bool_(), nullable=False),
                pa.field("error", pa.string(), nullable=False),
                pa.field("error_type", pa.string(), nullable=False),
            ]
        ),
        doc="one evaluated item: what the model saw and said, what was decoded and the checker's verdict",
    )
)


# ------------------------------------------------------------------------------------------------- engine


def as_engine(
    engine_or_model: Any,
    tokenizer: Any = None,
    *,
    adapter: str | None = None,
    kind: str = "hf",
    batch_size: int = 8,
    num_threads: int | None = None,
    **engine_kwargs: Any,
):
    """An engine from an engine, a ``(model, tokenizer)`` pair, a loaded model + ``tokenizer``, or a name/path."""
    if hasattr(engine_or_model, "generate") and hasattr(engine_or_model, "tokenizer") and not hasattr(
        engine_or_model, "config"
    ):
        return engine_or_model  # already an engine (a transformers model also has generate, but has a config)
    from ..engines import make_engine

    if isinstance(engine_or_model, tuple) and len(engine_or_model) == 2:
        engine_or_model, tokenizer = engine_or_model
    kw = dict(engine_kwargs)
    if kind == "hf":
        kw.update(batch_size=batch_size, num_threads=num_threads)
    return make_engine(kind, model=engine_or_model, tokenizer=tokenizer, adapter=adapter, **kw)


# ----------------------------------------------------------------------------------------------- examples


def _split_categories(categories: str | Iterable[str] | None) -> tuple[list[str] | None, list[int] | None]:
    if categories is None:
        return None, None
    cats = [c.strip() for c in categories.split(",")] if isinstance(categories, str) else list(categories)
    cats = [c for c in cats if c]
    known = set(bf.V3_CATEGORIES) | set(APIBANK_CATEGORIES)
    unknown = [c for c in cats if c not in known]
    if unknown:
        raise ValueError(f"unknown categories {unknown}; known: {list(bf.V3_CATEGORIES) + list(APIBANK_CATEGORIES)}")
    bfcl = [c for c in cats if c in bf.V3_CATEGORIES] or None
    levels = [int(c[-1]) for c in cats if c in APIBANK_CATEGORIES] or None
    return bfcl, levels


def load_examples(
    benchmarks: Sequence[str], categories: str | Iterable[str] | None = None, apibank_dir: str | None = None
) -> list[Example]:
    """Benchmark examples via the loaders; ``categories`` filters each benchmark whose categories it names."""
    from ..data.loaders import load

    bfcl_cats, levels = _split_categories(categories)
    out: list[Example] = []
    for b in benchmarks:
        if b == "bfcl":
            exs, reports = load("bfcl", categories=bfcl_cats)
        elif b == "apibank":
            exs, reports = load("apibank", apibank_dir, level=levels or [1, 2])
        else:
            raise ValueError(f"unknown benchmark {b!r} ({'|'.join(BENCHMARKS)})")
        for r in reports:
            if r.skipped:
                log.warning("%s", r.summary())
        out.extend(exs)
    return out


def _benchmark_of(ex: Example) -> str:
    return "apibank" if ex.category in APIBANK_CATEGORIES or ex.source == "apibank" else "bfcl"


# -------------------------------------------------------------------------------------------------- rows


def _row(ex: Example, bench: str, prompt: str, output: str, s: bf.SampleScore) -> dict[str, Any]:
    return {
        "id": ex.id,
        "benchmark": bench,
        "category": ex.category,
        "prompt": prompt,
        "output": output,
        "calls": calls_to_json(s.calls) if s.calls is not None else "null",
        "valid": bool(s.valid),
        "error": s.error or "",
        "error_type": s.error_type or "",
    }


def _generate_texts(engine, prompts: list[str], params: GenerationParams) -> list[str]:
    if not prompts:
        return []
    return [c[0].text if c else "" for c in engine.generate(prompts, params)]


# ------------------------------------------------------------------------------------------------ evaluate


def evaluate(
    engine_or_model: Any,
    *,
    benchmarks: Sequence[str] | str = BENCHMARKS,
    categories: str | Iterable[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
    examples: Sequence[Example] | None = None,
    tokenizer: Any = None,
    adapter: str | None = None,
    engine_kind: str = "hf",
    engine_kwargs: dict[str, Any] | None = None,
    batch_size: int = 8,
    num_threads: int | None = None,
    max_new_tokens: int = 256,
    style: PromptStyle = PromptStyle(),
    apibank_prompt: str = "ours",
    apibank_dir: str | None = None,
    max_steps: int = MAXIMUM_STEP_LIMIT,
    progress: bool = True,
    print_tables: bool = True,
    model_label: str | None = None,
) -> dict[str, Any]:
    """Evaluate a model on BFCL v3 and/or API-Bank L1/L2; write samples + summary to ``out_dir``; return the summary.

    ``examples`` replaces loading (any mix of BFCL and API-Bank examples; ``categories``/``limit`` still
    apply).  Generation is greedy with ``max_new_tokens`` per step; multi-turn turns are capped at
    ``max_steps`` executing steps (bfcl: 20).
    """
    t_start = time.time()
    if isinstance(benchmarks, str):
        benchmarks = [b.strip() for b in benchmarks.split(",") if b.strip()]
    for b in benchmarks:
        if b not in BENCHMARKS:
            raise ValueError(f"unknown benchmark {b!r} ({'|'.join(BENCHMARKS)})")
    engine = as_engine(engine_or_model, tokenizer, adapter=adapter, kind=engine_kind,
                       batch_size=batch_size, num_threads=num_threads, **(engine_kwargs or {}))
    label = model_label or (engine_or_model if isinstance(engine_or_model, str) else type(engine).__name__)

    if examples is None:
        examples = load_examples(benchmarks, categories, apibank_dir)
    else:
        bfcl_cats, levels = _split_categories(categories)
        keep = []
        for ex in examples:
            bench = _benchmark_of(ex)
            if bench not in benchmarks:
                continue
            if bench == "bfcl" and bfcl_cats is not None and ex.category not in bfcl_cats:
                continue
            if bench == "apibank" and levels is not None and ex.category not in [f"apibank_level{lv}" for lv in levels]:
                continue
            keep.append(ex)
        examples = keep
    examples = bf.stable_subset(examples, limit, seed)

    single = [ex for ex in examples if _benchmark_of(ex) == "bfcl" and ex.category not in bf.MULTI_TURN_CATEGORIES]
    multi = [ex for ex in examples if _benchmark_of(ex) == "bfcl" and ex.category in bf.MULTI_TURN_CATEGORIES]
    apib = [ex for ex in examples if _benchmark_of(ex) == "apibank"]
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0, n=1, seed=seed)

    rows: list[dict[str, Any]] = []
    stats: dict[str, dict[str, int]] = defaultdict(lambda: {"correct": 0, "total": 0})
    errors: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    kinds: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(bf.ANSWER_KINDS, 0))
    timing: dict[str, dict[str, float]] = {}

    def record(ex: Example, bench: str, prompt: str, output: str, s: bf.SampleScore) -> None:
        rows.append(_row(ex, bench, prompt, output, s))
        st = stats[ex.category]
        st["total"] += 1
        st["correct"] += int(bool(s.valid))
        if not s.valid:
            errors[ex.category][s.error_type or "unknown"] += 1

    if single:
        t0 = time.time()
        prompts = bf.single_turn_prompts(engine.tokenizer, single, style)
        texts = _generate_texts(engine, prompts, params)
        for ex, p, t in zip(single, prompts, texts):
            record(ex, "bfcl", p, t, bf.score_single_turn(ex, t))
            kinds[ex.category][bf.answer_kind(t)] += 1
        timing["bfcl_single_turn"] = _timing(t0, len(single))

    if multi:
        t0 = time.time()
        results = run_multi_turn(engine, multi, params, style=style, max_steps=max_steps, progress=progress)
        for r in results:
            s = bf.SampleScore(r.valid, None, r.error, r.error_type)
            row = _row(r.example, "bfcl", r.prompts[0] if r.prompts else "", json.dumps(r.outputs, ensure_ascii=False), s)
            row["calls"] = json.dumps(r.executed, ensure_ascii=False)
            if r.rejected and not row["error"]:
                row["error"] = f"{len(r.rejected)} call(s) refused (not methods of the involved classes)"
            rows.append(row)
            st = stats[r.example.category]
            st["total"] += 1
            st["correct"] += int(r.valid)
            if not r.valid:
                errors[r.example.category][r.error_type or "unknown"] += 1
        timing["bfcl_multi_turn"] = _timing(t0, len(multi))

    if apib:
        t0 = time.time()
        prompts = ab.apibank_prompts(engine.tokenizer, apib, apibank_prompt, style)
        texts = _generate_texts(engine, prompts, params)
        for ex, p, t in zip(apib, prompts, texts):
            record(ex, "apibank", p, t, ab.score_apibank(ex, t))
        timing["apibank"] = _timing(t0, len(apib))

    summary: dict[str, Any] = {
        "model": str(label),
        "benchmarks": list(benchmarks),
        "subset": "full categories" if limit is None else f"seeded subset: at most {limit} per category (seed {seed})",
        "limit": limit,
        "seed": seed,
        "settings": {
            "max_new_tokens": max_new_tokens,
            "max_steps": max_steps,
            "tools": style.tools,
            "apibank_prompt": apibank_prompt,
            "decoding": "greedy",
        },
        "n_items": len(rows),
    }
    bfcl_stats = {c: v for c, v in stats.items() if c not in APIBANK_CATEGORIES}
    if "bfcl" in benchmarks:
        summary["bfcl"] = bf.summarise(bfcl_stats)
        for v in summary["bfcl"]["categories"].values():
            v["ci95"] = list(wilson(v["correct"], v["total"]))
        # call / no_call / broken_call per single-turn category: an irrelevance score can be made of broken
        # call lists (BFCL counts them as no call), which is not abstention.
        summary["bfcl"]["answer_kinds"] = {c: dict(v) for c, v in kinds.items()}
    if "apibank" in benchmarks:
        summary["apibank"] = {
            c.replace("apibank_", ""): {"accuracy": v["correct"] / v["total"], **v,
                                        "ci95": list(wilson(v["correct"], v["total"]))}
            for c, v in stats.items()
            if c in APIBANK_CATEGORIES and v["total"]
        }
    summary["errors"] = {c: dict(v) for c, v in errors.items()}
    timing["total"] = _timing(t_start, len(rows))
    summary["timing"] = timing

    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        ref = write_table(rows, out / "samples.parquet", EVAL_SAMPLES)
        summary["samples"] = ref.to_dict()
        atomic_write_json(out / "summary.json", summary)
    if print_tables:
        print(format_tables(summary))
    return summary


def _timing(t0: float, n: int) -> dict[str, float]:
    dt = time.time() - t0
    return {"seconds": round(dt, 3), "items": n, "seconds_per_item": round(dt / n, 4) if n else 0.0}


# ---------------------------------------------------------------------------------------------- printing


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def _ci(v: dict[str, Any]) -> str:
    lo, hi = v.get("ci95") or wilson(int(v["correct"]), int(v["total"]))
    return f"{100 * lo:.0f}–{100 * hi:.0f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def format_tables(summary: dict[str, Any]) -> str:
    """The summary as the paper's Table 1 (BFCL) and Table 2 (API-Bank), plus BFCL per-category accuracy."""
    parts = [f"Model: {summary.get('model')}  ({summary.get('subset')})"]
    b = summary.get("bfcl")
    if b is not None:
        head = ["Model", "Overall", "Non-live", "Live", "Multi-turn", "Relevance", "Irrelevance"]
        row = [str(summary.get("model")), _pct(b.get("overall")), _pct(b.get("non_live")), _pct(b.get("live")),
               _pct(b.get("multi_turn")), _pct(b.get("relevance")), _pct(b.get("irrelevance"))]
        parts.append("Table 1 — BFCL v3 (accuracy %)\n" + _table(head, [row]))
        note = f"groups evaluated: {', '.join(b.get('groups_evaluated', [])) or 'none'}"
        if b.get("missing"):
            note += "; missing categories: " + "; ".join(f"{g}: {', '.join(c)}" for g, c in b["missing"].items())
        parts.append(note)
        cats = b.get("categories", {})
        if cats:
            kinds = b.get("answer_kinds", {})
            rows = [[c, str(v["total"]), str(v["correct"]), _pct(v["accuracy"]), _ci(v),
                     *(str(kinds[c][k]) if c in kinds else "" for k in bf.ANSWER_KINDS)] for c, v in cats.items()]
            head = ["category", "n", "correct", "acc %", "95 % CI", "answered: call", "no call", "broken call"]
            parts.append("BFCL per category (answered: what the outputs were, whatever was asked)\n"
                         + _table(head, rows))
    a = summary.get("apibank")
    if a is not None:
        head = ["Model", "API-Bank L1", "API-Bank L2"]
        l1, l2 = a.get("level1"), a.get("level2")
        row = [str(summary.get("model")), _pct(l1["accuracy"]) if l1 else "n/a", _pct(l2["accuracy"]) if l2 else "n/a"]
        counts = ", ".join(f"{k}: {v['correct']}/{v['total']}, 95 % CI {_ci(v)} %" for k, v in a.items())
        parts.append("Table 2 — API-Bank (accuracy %)\n" + _table(head, [row]) + (f"\n({counts})" if counts else ""))
    t = summary.get("timing", {}).get("total")
    if t:
        parts.append(f"{t['items']} items in {t['seconds']:.1f} s ({t['seconds_per_item']:.3f} s/item)")
    return "\n\n".join(parts)
