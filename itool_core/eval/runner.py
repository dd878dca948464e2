"""Evaluation entry point: ``evaluate(policy, EvalConfig)`` on BFCL v3 (paper Table 1) and API-Bank L1/L2 (Table 2).

``policy`` is anything implementing the engine protocol (:mod:`itool_core.engines.base`), a ``(model,
tokenizer)`` pair, or a model name/path (+ LoRA ``adapter``, built with the engine named by ``engine``).  The
:class:`~itool_core.config.EvalConfig` says what is measured — categories, a seeded stable subset of ``limit``
items per category (:func:`itool_core.eval.bfcl.stable_subset`: growing it only adds items), greedy decoding
with ``max_new_tokens``, tool rendering, the API-Bank prompt, multi-turn step cap — so ``itool eval`` and the
pipeline's evaluation stage measure the same thing from the same config.  Each benchmark of
:data:`itool_core.registry.BENCHMARKS` whose categories are named loads, answers and scores its items
(:mod:`itool_core.eval.benchmarks`).

It writes, under ``out_dir``: ``samples.parquet`` (one row per item, schema ``eval_samples/1``: id, benchmark,
category, prompt, raw output, parsed calls as JSON, valid, error, error type) through
:func:`itool_core.artifacts.write_table`, and ``summary.json`` (atomic), and returns the summary dict: per
category n, accuracy and the Wilson 95 % interval.  :func:`format_tables` prints it in the layout of the
paper's Table 1 and Table 2.  Every number of a subset run is labelled with the subset size and seed
(``summary["subset"]``).

``itool eval`` (:mod:`itool_core.cli.eval`) is this function on the command line.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..artifacts import atomic_write_json, write_table
from ..calls import PromptStyle
from ..config import EvalConfig, benchmark_categories
from ..data.records import Example
from ..engines import closing
from ..engines.base import GenerationParams
from ..registry import BENCHMARKS, ENGINES
from ..schemas import TableSchema, register
from . import bfcl as bf
from .stats import wilson

__all__ = ["EVAL_SAMPLES", "evaluate", "format_tables", "as_engine"]

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


def as_engine(
    policy: Any,
    *,
    engine: str = "hf",
    adapter: str | None = None,
    batch_size: int = 8,
    num_threads: int | None = None,
    progress: bool | None = None,
    serve: Any = None,
    log_dir: str | Path | None = None,
):
    """An engine from an engine, a ``(model, tokenizer)`` pair, or a name/path (built by engine ``engine``;
    ``serve`` / ``log_dir``: the served engine's server settings and log folder)."""
    if hasattr(policy, "generate") and hasattr(policy, "tokenizer") and not hasattr(policy, "config"):
        return policy  # already an engine (a transformers model also has generate, but has a config)
    tokenizer = None
    if isinstance(policy, tuple) and len(policy) == 2:
        policy, tokenizer = policy
    return ENGINES.load(engine).build(
        policy,
        tokenizer=tokenizer,
        adapter=adapter,
        batch_size=batch_size,
        num_threads=num_threads,
        progress=progress,
        serve=serve,
        log_dir=log_dir,
    )


def select_items(examples: Sequence[Example], cfg: EvalConfig) -> list[Example]:
    """The items ``cfg`` scores: per category, ``cfg.split``'s block of the seeded order (none: the whole order),
    at most ``cfg.limit`` of it.  The test block is the first ``cfg.test_items`` items, dev the rest, so the two
    never share an item; a category with no item in the requested block is an error naming it."""
    if cfg.split is None:
        return bf.stable_subset(examples, cfg.limit, cfg.seed)
    by_cat: dict[str, list[Example]] = defaultdict(list)
    for ex in bf.stable_subset(examples, None, cfg.seed):  # every item, in seeded order per category
        by_cat[ex.category].append(ex)
    out: list[Example] = []
    for cat, exs in by_cat.items():
        block = exs[: cfg.test_items] if cfg.split == "test" else exs[cfg.test_items :]
        if not block:
            raise ValueError(
                f"evaluation.split={cfg.split}: category {cat!r} has {len(exs)} items, none after the test block "
                f"(evaluation.test_items={cfg.test_items}): lower test_items or leave the category out"
            )
        out.extend(block if cfg.limit is None else block[: cfg.limit])
    return out


def subset_text(cfg: EvalConfig) -> str:
    """How the items were chosen, for the summary and every table."""
    if cfg.split is None:
        if cfg.limit is None:
            return "full categories"
        return f"seeded subset: at most {cfg.limit} per category (seed {cfg.seed})"
    block = (
        f"test split: the first {cfg.test_items} items per category"
        if cfg.split == "test"
        else f"dev split: the items after the first {cfg.test_items} per category (disjoint from the test split)"
    )
    most = "" if cfg.limit is None else f", at most {cfg.limit} of them"
    return f"{block} in seeded order (seed {cfg.seed}){most}"


def evaluate(
    policy: Any,
    cfg: EvalConfig = EvalConfig(),
    *,
    examples: Sequence[Example] | None = None,
    out_dir: str | Path | None = None,
    engine: str = "hf",
    adapter: str | None = None,
    num_threads: int | None = None,
    data_dirs: dict[str, str | Path | None] | None = None,
    progress: bool = True,
    print_tables: bool = True,
    label: str | None = None,
    serve: Any = None,
) -> dict[str, Any]:
    """Evaluate ``policy`` as ``cfg`` says; write samples + summary to ``out_dir``; return the summary.

    ``examples`` replaces loading (any mix of the benchmarks' examples; ``cfg.categories`` / ``cfg.limit``
    still apply).  ``data_dirs`` maps a benchmark to its data folder (API-Bank: ``default_apibank_dir``).
    ``cfg.tools_style`` None renders tools with ``PromptStyle()``'s default; the pipeline fills it in from the
    training config (:meth:`~itool_core.config.RunConfig.evaluation_config`).  ``serve``
    (:class:`~itool_core.config.ServeConfig`): the served engine's server; one built here is closed (its server
    stopped) before returning.
    """
    t_start = time.time()
    eng = as_engine(
        policy,
        engine=engine,
        adapter=adapter,
        batch_size=cfg.batch_size,
        num_threads=num_threads,
        serve=serve,
        log_dir=out_dir,
    )
    with closing(eng) if eng is not policy else contextlib.nullcontext(eng):
        return _evaluate(eng, policy, cfg, t_start, examples, out_dir, data_dirs, progress, print_tables, label)


def _evaluate(
    eng: Any,
    policy: Any,
    cfg: EvalConfig,
    t_start: float,
    examples: Sequence[Example] | None,
    out_dir: str | Path | None,
    data_dirs: dict[str, str | Path | None] | None,
    progress: bool,
    print_tables: bool,
    label: str | None,
) -> dict[str, Any]:
    name = label or (policy if isinstance(policy, str) else type(eng).__name__)
    wanted = set(cfg.categories)
    owners = {c: b for b in BENCHMARKS.names() for c in benchmark_categories(b)}
    benchmarks = cfg.benchmarks()

    if examples is None:
        examples = []
        for b in benchmarks:
            owned = [c for c in cfg.categories if owners[c] == b]
            examples.extend(BENCHMARKS.load(b).load(owned, (data_dirs or {}).get(b)))
    # every category of cfg is a registered benchmark's (EvalConfig checks), so a kept item has an owner
    examples = [ex for ex in examples if ex.category in wanted]
    examples = select_items(examples, cfg)

    style = PromptStyle(cfg.tools_style) if cfg.tools_style else PromptStyle()
    params = GenerationParams(max_new_tokens=cfg.max_new_tokens, temperature=0.0, n=1, seed=cfg.seed)
    timing: dict[str, dict[str, float]] = {}
    summary: dict[str, Any] = {
        "model": str(name),
        "benchmarks": list(benchmarks),
        "subset": subset_text(cfg),
        "limit": cfg.limit,
        "seed": cfg.seed,
        "split": cfg.split,
        "test_items": cfg.test_items if cfg.split else None,
        "settings": {
            "max_new_tokens": cfg.max_new_tokens,
            "max_steps": cfg.max_steps,
            "tools": style.tools,
            "apibank_prompt": cfg.apibank_prompt,
            "decoding": "greedy",
        },
    }
    rows: list[dict[str, Any]] = []
    errors: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for b in benchmarks:
        bench = BENCHMARKS.load(b)
        scored = bench.answer(
            eng, [ex for ex in examples if owners[ex.category] == b], params, cfg, style, progress, timing
        )
        for s in scored:
            rows.append(s.row)
            if not s.valid:
                errors[s.category][s.row["error_type"] or "unknown"] += 1
        summary[b] = bench.summarise(scored)
    summary["n_items"] = len(rows)
    summary["errors"] = {c: dict(v) for c, v in errors.items()}
    dt = time.time() - t_start
    timing["total"] = {
        "seconds": round(dt, 3),
        "items": len(rows),
        "seconds_per_item": round(dt / len(rows), 4) if rows else 0.0,
    }
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


# ---------------------------------------------------------------------------------------------- printing


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def _ci(v: dict[str, Any]) -> str:
    lo, hi = v.get("ci95") or wilson(int(v["correct"]), int(v["total"]))
    return f"{100 * lo:.0f}–{100 * hi:.0f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def line(r: list[str]) -> str:
        cells = (str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
        return "| " + " | ".join(cells) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def format_tables(summary: dict[str, Any]) -> str:
    """The summary as the paper's Table 1 (BFCL) and Table 2 (API-Bank), plus BFCL per-category accuracy."""
    parts = [f"Model: {summary.get('model')}  ({summary.get('subset')})"]
    b = summary.get("bfcl")
    if b is not None:
        head = ["Model", "Overall", "Non-live", "Live", "Multi-turn", "Relevance", "Irrelevance"]
        row = [
            str(summary.get("model")),
            _pct(b.get("overall")),
            _pct(b.get("non_live")),
            _pct(b.get("live")),
            _pct(b.get("multi_turn")),
            _pct(b.get("relevance")),
            _pct(b.get("irrelevance")),
        ]
        parts.append("Table 1 — BFCL v3 (accuracy %)\n" + _table(head, [row]))
        note = f"groups evaluated: {', '.join(b.get('groups_evaluated', [])) or 'none'}"
        if b.get("missing"):
            note += "; missing categories: " + "; ".join(f"{g}: {', '.join(c)}" for g, c in b["missing"].items())
        parts.append(note)
        cats = b.get("categories", {})
        if cats:
            kinds = b.get("answer_kinds", {})
            rows = [
                [
                    c,
                    str(v["total"]),
                    str(v["correct"]),
                    _pct(v["accuracy"]),
                    _ci(v),
                    *(str(kinds[c][k]) if c in kinds else "" for k in bf.ANSWER_KINDS),
                ]
                for c, v in cats.items()
            ]
            head = ["category", "n", "correct", "acc %", "95 % CI", "answered: call", "no call", "broken call"]
            parts.append(
                "BFCL per category (answered: what the outputs were, whatever was asked)\n" + _table(head, rows)
            )
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
