"""Build the warm-up training set: default sources → checks → source caps → augmentations → length fit.

The embedded sources (BFCL's unused exec/sql sets + API-Bank's training set, ``load_default_training_set``)
taught SmolLM2-135M simple and multiple calls but not abstention or parallel calls, and are dominated by two
functions (docs/design.md#what-sft-on-the-embedded-data-does).  This module turns them into the set the warm-up
SFT (§4.2) trains on, in this order — each step's counts go into the card:

1. **load** the default sources (or ``sources=`` given by the caller);
2. **validate**: every source target must parse, serialise, have the argument types its schema declares and
   pass bfcl-eval's ``ast_checker`` against its own tools (:func:`~itool_core.data.augment.check_example`).
   31 of the 1 243 default examples fail (12 API-Bank arrays without an ``items`` type, which the checker
   cannot read; 9 ``sql`` items with numbers in ``update_values``, declared a list of strings; an int in a
   float list; arguments the schema lacks or required ones missing): they are dropped and listed in the card,
   not repaired — a target the benchmark's checker rejects would teach a rejected answer;
3. **dedupe** identical examples (messages, tools and target after whitespace/case normalisation);
4. **source caps** (:func:`~itool_core.data.augment.cap_functions`): no function above ``max_share`` of the
   target calls;
5. **augmentations** (:mod:`itool_core.data.augment`): no-call, parallel, renamed, distractors, each
   switchable off for the ablation rows; no-call questions are drawn from the validated set *before* the caps;
6. **dedupe** again, then **length fit**: the profile's tool rendering (quick: ``compact``) and max length
   (quick: 1024 tokens = ``SFTConfig.max_length``), measured with the real tokenizer on the exact training
   text (``render_prompt`` + ``render_target``).  An example over the limit first gets its tool list *trimmed*
   to the called tools + up to ``keep_extra_tools`` others (seeded); if it still does not fit it is *dropped*
   (never truncated: a cut answer teaches a call list without its end).  Dropped and trimmed ids are in the card;
7. **final caps**: augmentations add calls (a parallel join of four ``sql.execute`` requests), so the caps are
   applied once more to the final set.

The card (JSON + markdown beside the Parquet file) has counts per source, per augmentation and per category,
the no-call share, the calls-per-example distribution, token lengths, function diversity and the top function
shares, and everything each step dropped.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..calls import PromptStyle, serialise_calls
from . import augment as aug
from .records import Example

__all__ = [
    "BuildProfile",
    "PROFILES",
    "DEFAULT_OUT",
    "validate_examples",
    "dedupe",
    "fit_length",
    "build_training_set",
    "training_card",
    "card_markdown",
    "from_config",
    "write_training_set",
]

DEFAULT_OUT = "data/train_quick.parquet"


@dataclass(frozen=True)
class BuildProfile:
    name: str
    #: Prompt + answer tokens an example may have (None: no length fit).  quick = ``SFTConfig.max_length``.
    max_length: int | None = 1024
    #: Tool rendering (``calls.PromptStyle``) the lengths are measured with; training must use the same.
    tools_style: str = "compact"
    #: Over-long examples: "trim" (tools cut to the called ones + ``keep_extra_tools``, then drop) or "drop".
    long_policy: str = "trim"
    keep_extra_tools: int = 2
    tokenizer: str = "smollm2-135m-instruct"


PROFILES: dict[str, BuildProfile] = {
    # SmolLM2-135M on CPU: compact tools, 1024 tokens (≥ 99 % of the default set fits before trimming).
    "quick": BuildProfile("quick", max_length=1024, tools_style="compact"),
    # The demo run trains the same model on the same set as quick.
    "demo": BuildProfile("demo", max_length=1024, tools_style="compact"),
    # An 8B model on a GPU: BFCL's verbatim JSON tool rendering and a long context.
    "paper": BuildProfile("paper", max_length=4096, tools_style="json"),
}


# ----------------------------------------------------------------------------------------------------- steps


def validate_examples(examples: Sequence[Example]) -> tuple[list[Example], list[dict[str, str]]]:
    """Keep examples whose target passes :func:`~itool_core.data.augment.check_example`; list the others."""
    kept, rejected = [], []
    for ex in examples:
        ok, why = aug.check_example(ex)
        if ok:
            kept.append(ex)
        else:
            rejected.append({"id": ex.id, "reason": why})
    return kept, rejected


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\S+", text.lower()))


def _dedupe_key(ex: Example) -> str:
    msgs = [(m.get("role"), _norm(str(m.get("content") or ""))) for m in ex.messages]
    tools = sorted(json.dumps(t, sort_keys=True, ensure_ascii=False) for t in ex.tools)
    return json.dumps([msgs, tools, serialise_calls(ex.target)], ensure_ascii=False)


def dedupe(examples: Sequence[Example]) -> tuple[list[Example], list[str]]:
    """Drop repeats (same normalised messages, tools and target) and repeated ids; keep the first."""
    seen_keys: set[str] = set()
    seen_ids: set[str] = set()
    kept, dropped = [], []
    for ex in examples:
        k = _dedupe_key(ex)
        if k in seen_keys or ex.id in seen_ids:
            dropped.append(ex.id)
            continue
        seen_keys.add(k)
        seen_ids.add(ex.id)
        kept.append(ex)
    return kept, dropped


def _trimmed(ex: Example, keep_extra: int, rng: random.Random) -> Example | None:
    called = {c.name for c in ex.target}
    others = [t["name"] for t in ex.tools if t["name"] not in called]
    n_keep = keep_extra if called else max(1, keep_extra)  # a no-call example keeps at least one tool
    if len(others) <= n_keep:
        return None
    keep = set(rng.sample(others, n_keep))
    tools = [t for t in ex.tools if t["name"] in called or t["name"] in keep]
    meta = dict(ex.meta)
    meta["trimmed_tools"] = [n for n in others if n not in keep]
    return Example(ex.id, ex.source, ex.category, tools, ex.messages, ex.target, meta)


def fit_length(
    examples: Sequence[Example],
    tokenizer,
    max_length: int,
    style: PromptStyle = PromptStyle("compact"),
    policy: str = "trim",
    keep_extra_tools: int = 2,
    seed: int = 0,
) -> tuple[list[Example], list[int], dict[str, Any]]:
    """Examples that fit ``max_length`` tokens (trimmed where allowed), their lengths, and a report."""
    from .stats import token_lengths

    if policy not in ("trim", "drop"):
        raise ValueError(f"unknown long-example policy {policy!r} (trim|drop)")
    lengths = token_lengths(list(examples), tokenizer, style)
    rng = random.Random(f"itool-build/length/{seed}")
    kept: list[Example] = []
    kept_len: list[int] = []
    trimmed, dropped = [], []
    retry: list[tuple[int, Example]] = []
    for ex, n in zip(examples, lengths):
        if n <= max_length:
            kept.append(ex)
            kept_len.append(n)
            continue
        t = _trimmed(ex, keep_extra_tools, rng) if policy == "trim" else None
        if t is None:
            dropped.append({"id": ex.id, "tokens": n})
        else:
            retry.append((n, t))
    if retry:
        new_lengths = token_lengths([t for _, t in retry], tokenizer, style)
        for (n0, t), n in zip(retry, new_lengths):
            if n <= max_length:
                kept.append(t)
                kept_len.append(n)
                trimmed.append(
                    {"id": t.id, "tokens_before": n0, "tokens": n, "tools_removed": len(t.meta["trimmed_tools"])}
                )
            else:
                dropped.append({"id": t.id, "tokens": n0, "tokens_trimmed": n})
    within = sum(1 for n in lengths if n <= max_length)
    report = {
        "max_length": max_length,
        "tools_style": style.tools,
        "policy": policy,
        "within_before_fit": within,
        "share_within_before_fit": within / len(lengths) if lengths else 1.0,
        "trimmed": trimmed,
        "dropped": dropped,
    }
    # keep the input order (trimmed examples were appended at the end)
    order = {ex.id: i for i, ex in enumerate(examples)}
    pairs = sorted(zip(kept, kept_len), key=lambda p: order[p[0].id])
    return [p[0] for p in pairs], [p[1] for p in pairs], report


# ------------------------------------------------------------------------------------------------------ card


_TOKEN_BINS = (256, 384, 512, 640, 768, 896, 1024, 1536, 2048)


def training_card(examples: Sequence[Example], lengths: Sequence[int] | None = None, **extra: Any) -> dict[str, Any]:
    """Counts, shares and distributions that describe a built training set (``extra`` is merged in)."""
    from .stats import _summary

    funcs = Counter(c.name for e in examples for c in e.target)
    n_calls = sum(funcs.values())
    rows = len(examples)
    no_call = sum(1 for e in examples if not e.target)
    card: dict[str, Any] = {
        "rows": rows,
        "by_source": dict(sorted(Counter(e.source for e in examples).items())),
        "by_augmentation": dict(sorted(Counter(e.meta.get("augmentation", "none") for e in examples).items())),
        "by_source_and_augmentation": dict(
            sorted(Counter(f"{e.source}/{e.meta.get('augmentation', 'none')}" for e in examples).items())
        ),
        "by_category": dict(Counter(e.category for e in examples).most_common()),
        "no_call_rows": no_call,
        "no_call_share": no_call / rows if rows else 0.0,
        "no_call_near_miss_rows": sum(1 for e in examples if e.meta.get("near_miss")),
        # per source: the prompt's style must be no cue for abstaining (NoCallParams.source_share)
        "no_call_share_by_source": {
            src: sum(1 for e in examples if e.source == src and not e.target) / n
            for src, n in sorted(Counter(e.source for e in examples).items())
        },
        "calls_per_example": {str(k): v for k, v in sorted(Counter(len(e.target) for e in examples).items())},
        "target_calls": n_calls,
        "distinct_functions_called": len(funcs),
        "distinct_tools_offered": len({t.get("name") for e in examples for t in e.tools}),
        "max_function_share": max(funcs.values()) / n_calls if n_calls else 0.0,
        "top_functions": [{"name": f, "calls": n, "share": n / n_calls} for f, n in funcs.most_common(10)],
        "n_tools": _summary([len(e.tools) for e in examples]),
    }
    if lengths is not None and len(lengths):
        card["tokens"] = _summary(lengths)
        hist: dict[str, int] = {}
        lo = 0
        for hi in _TOKEN_BINS:
            hist[f"{lo + 1}-{hi}"] = sum(1 for n in lengths if lo < n <= hi)
            lo = hi
        hist[f">{lo}"] = sum(1 for n in lengths if n > lo)
        card["token_histogram"] = {k: v for k, v in hist.items() if v}
    card.update(extra)
    return card


def card_markdown(card: dict[str, Any]) -> str:
    """A human-readable rendering of :func:`training_card` (written beside the Parquet file)."""
    pct = lambda x: f"{100 * x:.1f} %"  # noqa: E731
    lines = [f"# Training set card — profile `{card.get('profile', '?')}`, seed {card.get('seed', '?')}", ""]
    lines.append(f"- rows: **{card['rows']}**; target calls: {card['target_calls']}")
    lines.append(
        f"- no-call rows: {card['no_call_rows']} ({pct(card['no_call_share'])}), of which near misses: "
        f"{card.get('no_call_near_miss_rows', 0)}; per source: "
        + ", ".join(f"{s} {pct(x)}" for s, x in card.get("no_call_share_by_source", {}).items())
    )
    lines.append(
        f"- distinct functions called: {card['distinct_functions_called']}; distinct tools offered: "
        f"{card['distinct_tools_offered']}; largest function share: {pct(card['max_function_share'])}"
    )
    if "tokens" in card:
        t = card["tokens"]
        fit = card.get("length", {})
        lines.append(
            f"- tokens (prompt + answer, tools={fit.get('tools_style', '?')}): min {t['min']:.0f}, "
            f"median {t['p50']:.0f}, p90 {t['p90']:.0f}, p99 {t['p99']:.0f}, max {t['max']:.0f}"
        )
        if fit:
            lines.append(
                f"- max length {fit['max_length']}: {pct(fit['share_within_before_fit'])} fitted before the "
                f"length step; {len(fit['trimmed'])} trimmed, {len(fit['dropped'])} dropped"
            )
    lines += ["", "## Rows per source and augmentation", "", "| source | augmentation | rows |", "|---|---|---|"]
    for k, v in card["by_source_and_augmentation"].items():
        s, a = k.split("/", 1)
        lines.append(f"| {s} | {a} | {v} |")
    lines += ["", "## Rows per category", "", "| category | rows |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in card["by_category"].items()]
    lines += ["", "## Calls per example", "", "| calls | rows |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in card["calls_per_example"].items()]
    if "token_histogram" in card:
        lines += ["", "## Token lengths", "", "| tokens | rows |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in card["token_histogram"].items()]
    lines += ["", "## Top functions", "", "| function | calls | share |", "|---|---|---|"]
    lines += [f"| `{f['name']}` | {f['calls']} | {pct(f['share'])} |" for f in card["top_functions"]]
    steps = card.get("steps")
    if steps:
        lines += ["", "## Pipeline", "", "| step | rows after | note |", "|---|---|---|"]
        for s in steps:
            lines.append(f"| {s['step']} | {s['rows']} | {s.get('note', '')} |")
    lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ build


def build_training_set(
    profile: str | BuildProfile = "quick",
    apibank_dir: str | Path | None = None,
    augment: aug.AugmentConfig | None = None,
    seed: int = 0,
    *,
    sources: Sequence[Example] | None = None,
    tokenizer: Any = None,
    max_length: int | None | bool = True,
) -> tuple[list[Example], dict[str, Any]]:
    """The warm-up training set and its card (see the module docstring for the steps).

    ``augment``: which augmentations run and how (default :class:`~itool_core.data.augment.AugmentConfig`,
    all on; ``AugmentConfig.none()`` for the plain sources).  ``sources``: examples to build from instead of
    the default sources.  ``tokenizer``: for the length fit (default: the profile's, loaded here).
    ``max_length``: ``True`` = the profile's, an int overrides it, ``None``/``False`` skips the length fit.
    """
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    cfg = augment if augment is not None else aug.AugmentConfig()
    steps: list[dict[str, Any]] = []

    load_reports: list[str] = []
    if sources is None:
        from .loaders import load_default_training_set

        loaded, reports = load_default_training_set(apibank_dir)
        load_reports = [r.summary() for r in reports]
    else:
        loaded = list(sources)
    steps.append({"step": "load", "rows": len(loaded), "note": "default sources" if sources is None else "given"})

    valid, rejected = validate_examples(loaded)
    steps.append(
        {
            "step": "validate (parse, serialise, bfcl ast_checker)",
            "rows": len(valid),
            "note": f"{len(rejected)} rejected",
        }
    )
    valid, dup = dedupe(valid)
    steps.append({"step": "dedupe sources", "rows": len(valid), "note": f"{len(dup)} duplicates"})

    capped = aug.cap_functions(valid, cfg.caps, seed) if cfg.apply_caps else list(valid)
    cap_dropped = Counter(c.name for e in valid for c in e.target) - Counter(c.name for e in capped for c in e.target)
    steps.append(
        {
            "step": f"source caps (max share {cfg.caps.max_share:g})",
            "rows": len(capped),
            "note": f"{len(valid) - len(capped)} examples dropped",
        }
    )

    produced = aug.augment(capped, cfg, seed, no_call_sources=valid)
    combined = list(capped) + [e for name in aug.AUGMENTATIONS for e in produced.get(name, [])]
    steps.append(
        {
            "step": "augmentations",
            "rows": len(combined),
            "note": ", ".join(f"{k} +{len(v)}" for k, v in produced.items()) or "none",
        }
    )
    combined, dup2 = dedupe(combined)
    steps.append({"step": "dedupe", "rows": len(combined), "note": f"{len(dup2)} duplicates"})

    style = PromptStyle(prof.tools_style)
    limit = prof.max_length if max_length is True else (max_length or None)
    lengths: list[int] | None = None
    length_report: dict[str, Any] = {}
    if limit:
        if tokenizer is None:
            from ..models import load_tokenizer

            tokenizer = load_tokenizer(prof.tokenizer)
        combined, lengths, length_report = fit_length(
            combined, tokenizer, limit, style, prof.long_policy, prof.keep_extra_tools, seed
        )
        steps.append(
            {
                "step": f"length fit ({limit} tokens, tools={style.tools})",
                "rows": len(combined),
                "note": f"{len(length_report['trimmed'])} trimmed, {len(length_report['dropped'])} dropped",
            }
        )

    if cfg.apply_caps:
        final = aug.cap_functions(combined, cfg.caps, seed, drop_first=lambda e: "augmentation" in e.meta)
        if lengths is not None:
            keep = {e.id for e in final}
            lengths = [n for e, n in zip(combined, lengths) if e.id in keep]
        steps.append({"step": "final caps", "rows": len(final), "note": f"{len(combined) - len(final)} dropped"})
        combined = final

    card = training_card(
        combined,
        lengths,
        profile=prof.name,
        seed=seed,
        augment=dataclasses.asdict(cfg),
        build_profile=dataclasses.asdict(prof),
        length=length_report,
        rejected_sources=rejected,
        caps_dropped_calls=dict(cap_dropped.most_common()),
        load_reports=load_reports,
        steps=steps,
    )
    return combined, card


def from_config(build: Any, run_profile: str) -> dict[str, Any]:
    """``build_training_set`` keyword arguments from a run config's ``build`` section
    (:class:`~itool_core.config.BuildConfig`): its build profile, augmentations, caps and length limit."""
    cfg = aug.AugmentConfig(caps=aug.CapParams(max_share=build.max_share), apply_caps=build.caps)
    cfg = dataclasses.replace(
        cfg,
        enabled=tuple(build.augmentations),
        no_call=dataclasses.replace(cfg.no_call, rate=build.no_call_rate, near_miss=build.no_call_near_miss),
    )
    max_length: int | bool | None = True if build.max_length is None else (build.max_length or None)
    return {"profile": build.profile or run_profile, "augment": cfg, "max_length": max_length}


def write_training_set(examples: Sequence[Example], card: dict[str, Any], out: str | Path):
    """Write the Parquet table (``EXAMPLES`` schema, atomic) and the card (JSON + markdown) beside it."""
    from ..artifacts import atomic_write_json, atomic_write_text, write_table
    from ..schemas import EXAMPLES

    out = Path(out)
    ref = write_table([e.to_row() for e in examples], out, EXAMPLES)
    card = dict(card, artifact=ref.to_dict())
    stem = out.with_suffix("")
    atomic_write_json(f"{stem}.card.json", card)
    atomic_write_text(f"{stem}.card.md", card_markdown(card))
    return ref
