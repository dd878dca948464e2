"""Statistics of an example table: counts per source/category, the §4.2 difficulty features, token lengths.

Token lengths are those of the exact training/evaluation text (one prompt renderer, ``calls.render_prompt``,
plus the rendered target), so "fits the max length" here means fits in training.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..calls import PromptStyle, render_prompt, render_target
from .records import Example


def _summary(values: Iterable[float]) -> dict[str, float]:
    a = np.asarray(list(values), dtype=float)
    if a.size == 0:
        return {}
    return {
        "min": float(a.min()),
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
        "mean": float(a.mean()),
    }


def token_lengths(examples: list[Example], tokenizer, style: PromptStyle = PromptStyle()) -> list[int]:
    texts = [render_prompt(tokenizer, e.tools, e.messages, style) + render_target(e.target) for e in examples]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def table_stats(
    examples: list[Example], tokenizer=None, style: PromptStyle = PromptStyle(), max_length: int | None = None
) -> dict[str, Any]:
    funcs = Counter(c.name for e in examples for c in e.target)
    out: dict[str, Any] = {
        "rows": len(examples),
        "by_source": dict(Counter(e.source for e in examples).most_common()),
        "by_category": dict(Counter(e.category for e in examples).most_common()),
        "no_call_rows": sum(1 for e in examples if not e.target),
        "n_tools": _summary(len(e.tools) for e in examples),
        "tools_chars": _summary(len(json.dumps(e.tools, ensure_ascii=False)) for e in examples),
        "n_calls": _summary(len(e.target) for e in examples),
        "distinct_functions_called": len(funcs),
        "top_functions": dict(funcs.most_common(5)),
    }
    if tokenizer is not None and examples:
        lens = token_lengths(examples, tokenizer, style)
        out["tokens"] = _summary(lens)
        out["tool_rendering"] = style.tools
        if max_length:
            out["max_length"] = max_length
            out["share_within_max_length"] = float(np.mean([n <= max_length for n in lens]))
    return out


def format_stats(stats: dict[str, Any]) -> str:
    lines = [f"rows: {stats['rows']}   (no-call rows: {stats['no_call_rows']})"]
    lines.append("by source:   " + ", ".join(f"{k}={v}" for k, v in stats["by_source"].items()))
    lines.append("by category:")
    lines += [f"  {k:<28} {v:>6}" for k, v in stats["by_category"].items()]

    def row(name: str, s: dict[str, float]) -> str:
        if not s:
            return f"  {name:<14} -"
        return f"  {name:<14} " + "  ".join(f"{k}={v:,.1f}" for k, v in s.items())

    lines.append("difficulty features (§4.2):")
    lines.append(row("n_tools", stats["n_tools"]))
    lines.append(row("tools_chars", stats["tools_chars"]))
    lines.append(row("n_calls", stats["n_calls"]))
    if "tokens" in stats:
        lines.append(f"token length (prompt + answer, tools={stats['tool_rendering']}):")
        lines.append(row("tokens", stats["tokens"]))
        if "share_within_max_length" in stats:
            lines.append(f"  within max_length {stats['max_length']}: {100 * stats['share_within_max_length']:.1f} %")
    lines.append(f"distinct functions called: {stats['distinct_functions_called']}  top: {stats['top_functions']}")
    for o in stats.get("oversized_rows", []):
        lines.append(f"skipped row {o['row']} (id {o['id']!r}): field {o['field']!r}: {o['reason']}")
    return "\n".join(lines)
