"""The built warm-up training set (itool_core.data.build): card numbers, length fit, caps, validity, no leaks, CLI.

The leak guard compares every training question of the BUILT set (augmented ones included) with every scored
question: BFCL v3's categories (simple_python, multiple, parallel, parallel_multiple, irrelevance, live_*,
multi_turn_*) and API-Bank levels 1 and 2.  Exact match after whitespace/case/punctuation normalisation, word
3-gram Jaccard ≥ 0.8 (near-duplicate), and — because a parallel example joins several questions into one text
— containment: ≥ 80 % of a scored question's 3-grams inside one training text.  An inverted index over the
scored 3-grams keeps it to a few seconds.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict

import pytest

from itool_core.calls import PromptStyle
from itool_core.data import augment as A
from itool_core.data.apibank import default_apibank_dir, load_apibank
from itool_core.data.bfcl import V3_CATEGORIES, load_bfcl
from itool_core.data.build import (
    PROFILES,
    build_training_set,
    card_markdown,
    dedupe,
    fit_length,
    training_card,
)
from itool_core.data.records import Example
from itool_core.data.stats import token_lengths

needs_data = pytest.mark.skipif(
    not (default_apibank_dir() / "lv3-api-train.json").exists(), reason="API-Bank data not found"
)

NEAR_DUPLICATE = 0.8


@pytest.fixture(scope="module")
def built(smol_tokenizer):
    if not (default_apibank_dir() / "lv3-api-train.json").exists():
        pytest.skip("API-Bank data not found")
    return build_training_set("quick", tokenizer=smol_tokenizer)


# ------------------------------------------------------------------------------------------------ the card


@needs_data
def test_card_numbers(built):
    examples, card = built
    print(card_markdown(card))
    assert card["rows"] == len(examples) > 1000
    assert set(card["by_source"]) == {"bfcl_unused", "apibank"}
    assert set(card["by_augmentation"]) == {"none", *A.AUGMENTATIONS}
    # abstention is taught, but does not dominate
    assert 0.08 <= card["no_call_share"] <= 0.3
    # multi-call targets exist in numbers (both variants), 2–4 calls each
    cpe = {int(k): v for k, v in card["calls_per_example"].items()}
    assert sum(v for k, v in cpe.items() if k >= 2) > 0.15 * len(examples) and max(cpe) <= 4
    cats = Counter(e.category for e in examples)
    assert cats["aug_parallel"] > 50 and cats["aug_parallel_multiple"] > 50
    # diversity: far beyond BFCL unused's 52 functions, no function above the cap
    assert card["distinct_functions_called"] > 300
    assert card["max_function_share"] <= 0.05 + 1e-9
    calls = Counter(c.name for e in examples for c in e.target)
    assert max(calls.values()) <= 0.05 * sum(calls.values())
    # every step is accounted for
    assert [s["step"].split(" ")[0] for s in card["steps"]] == [
        "load",
        "validate",
        "dedupe",
        "source",
        "augmentations",
        "dedupe",
        "length",
        "final",
    ]
    json.dumps(card)  # serialisable as written


@needs_data
def test_lengths_fit(built, smol_tokenizer):
    examples, card = built
    prof = PROFILES["quick"]
    assert prof.max_length == 1024 and prof.tools_style == "compact"
    # ≥ 99 % of the generated set fits before anything is trimmed or dropped
    assert card["length"]["share_within_before_fit"] >= 0.99
    assert len(card["length"]["dropped"]) <= 0.01 * card["rows"]
    lengths = token_lengths(examples, smol_tokenizer, PromptStyle("compact"))
    assert max(lengths) <= 1024
    assert card["tokens"]["max"] == max(lengths)


@needs_data
def test_built_set_is_valid_and_unique(built):
    examples, _ = built
    assert len({e.id for e in examples}) == len(examples)
    assert len(dedupe(examples)[0]) == len(examples)
    bad = [(e.id, why) for e in examples for ok, why in [A.check_example(e)] if not ok]
    assert not bad, bad[:10]
    for e in examples:  # rows survive the Parquet schema round trip
        assert Example.from_row(e.to_row()).to_row() == e.to_row()


@needs_data
def test_build_is_deterministic(built, smol_tokenizer):
    # (switching augmentations off is tested in test_augment.py and through the CLI below)
    examples, _ = built
    again, _ = build_training_set("quick", tokenizer=smol_tokenizer)
    assert [e.to_row() for e in again] == [e.to_row() for e in examples]


# ------------------------------------------------------------------------------------------------- helpers


def test_fit_length_trims_then_drops(smol_tokenizer):
    tools = [
        {
            "name": f"tool_{i}",
            "description": "word " * 60,
            "parameters": {
                "type": "dict",
                "properties": {"x": {"type": "string", "description": "x"}},
                "required": ["x"],
            },
        }
        for i in range(6)
    ]
    from itool_core.calls import ToolCall

    msgs = [{"role": "user", "content": "call tool 3"}]
    ex = Example("t", "s", "c", tools, msgs, [ToolCall("tool_3", {"x": "a"})])
    huge = Example(
        "h", "s", "c", tools[:1], [{"role": "user", "content": "word " * 2000}], [ToolCall("tool_0", {"x": "a"})]
    )
    short = Example("s", "s", "c", tools[:1], msgs, [ToolCall("tool_0", {"x": "a"})])
    full = token_lengths([ex], smol_tokenizer, PromptStyle("compact"))[0]
    one = token_lengths([short], smol_tokenizer, PromptStyle("compact"))[0]
    limit = (full + one) // 2
    kept, lengths, rep = fit_length([ex, huge, short], smol_tokenizer, limit, keep_extra_tools=1)
    assert [e.id for e in kept] == ["t", "s"] and max(lengths) <= limit
    t = kept[0]
    assert len(t.tools) == 2 and "tool_3" in {x["name"] for x in t.tools} and len(t.meta["trimmed_tools"]) == 4
    assert [d["id"] for d in rep["dropped"]] == ["h"] and rep["trimmed"][0]["id"] == "t"
    kept, _, rep = fit_length([ex, short], smol_tokenizer, limit, policy="drop")
    assert [e.id for e in kept] == ["s"]


def test_card_on_hand_made():
    from itool_core.calls import ToolCall

    exs = [Example(f"e{i}", "s", "c", [], [], [ToolCall("f", {})] * (i % 3)) for i in range(6)]
    card = training_card(exs, [100, 300, 500, 700, 900, 1100], profile="quick", seed=0)
    assert card["no_call_rows"] == 2 and card["calls_per_example"] == {"0": 2, "1": 2, "2": 2}
    assert card["no_call_share_by_source"] == {"s": pytest.approx(2 / 6)}
    assert card["top_functions"][0] == {"name": "f", "calls": 6, "share": 1.0}
    assert sum(card["token_histogram"].values()) == 6
    assert "| s | none | 6 |" in card_markdown(card)


# ---------------------------------------------------------------------------------------------- leak guard


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def _user_texts(e: Example) -> list[str]:
    if "turns" in e.meta:  # multi-turn: the user messages of every turn
        return [m["content"] for turn in e.meta["turns"] for m in turn if m.get("role") == "user"]
    return [m["content"] for m in e.messages if m.get("role") == "user"]


def _grams(text: str) -> set[tuple[str, ...]]:
    w = text.split()
    if len(w) < 3:
        return {tuple(w)} if w else set()
    return {tuple(w[i : i + 3]) for i in range(len(w) - 2)}


@pytest.fixture(scope="module")
def scored():
    cats = [
        c
        for c in V3_CATEGORIES
        if c in ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance")
        or c.startswith(("live_", "multi_turn_"))
    ]
    assert len(cats) == len(V3_CATEGORIES)
    out = load_bfcl(cats) + load_apibank(1) + load_apibank(2)
    assert {e.category for e in out} >= {"simple_python", "irrelevance", "live_simple", "multi_turn_base"}
    return out


@needs_data
def test_no_training_question_in_scored_sets(built, scored):
    examples, _ = built
    # scored texts: each user message, and each example's whole user text
    scored_texts: dict[str, str] = {}
    for e in scored:
        for u in _user_texts(e) + [" ".join(_user_texts(e))]:
            if _norm(u):
                scored_texts.setdefault(_norm(u), e.id)
    index: dict[tuple, list[int]] = defaultdict(list)
    keys = list(scored_texts)
    grams = [_grams(k) for k in keys]
    for j, g in enumerate(grams):
        for x in g:
            index[x].append(j)

    exact, near, contained = [], [], []
    best = (0.0, "", "")
    train_texts = {}
    for e in examples:
        for u in _user_texts(e) + [" ".join(_user_texts(e))]:
            if _norm(u):
                train_texts.setdefault(_norm(u), e.id)
    for text, tid in train_texts.items():
        if text in scored_texts:
            exact.append((tid, scored_texts[text]))
        g = _grams(text)
        shared = Counter(j for x in g for j in index.get(x, ()))
        for j, inter in shared.items():
            jac = inter / (len(g) + len(grams[j]) - inter)
            if jac > best[0]:
                best = (jac, tid, scored_texts[keys[j]])
            if jac >= NEAR_DUPLICATE:
                near.append((round(jac, 3), tid, scored_texts[keys[j]]))
            elif len(grams[j]) >= 8 and inter / len(grams[j]) >= NEAR_DUPLICATE:
                contained.append((round(inter / len(grams[j]), 3), tid, scored_texts[keys[j]]))
    print(
        f"{len(train_texts)} training texts vs {len(scored_texts)} scored; "
        f"max 3-gram Jaccard {best[0]:.3f} ({best[1]} ~ {best[2]})"
    )
    assert not exact, exact[:10]
    assert not near, sorted(near, reverse=True)[:10]
    assert not contained, sorted(contained, reverse=True)[:10]


# ----------------------------------------------------------------------------------------------------- CLI


@needs_data
def test_cli_build_writes_table_and_card(tmp_path, capsys):
    from itool_core.artifacts import read_table
    from itool_core.cli import main
    from itool_core.schemas import EXAMPLES

    out = tmp_path / "train.parquet"
    rc = main(
        [
            "data",
            "build",
            "--profile",
            "quick",
            "--no-augment",
            "parallel",
            "renamed",
            "--max-length",
            "0",
            "--no-call-rate",
            "0.6",
            "--no-call-near-miss",
            "0.5",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    ref = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    table = read_table(out, EXAMPLES)
    assert ref["rows"] == table.num_rows > 500
    card = json.loads((tmp_path / "train.card.json").read_text())
    assert card["rows"] == table.num_rows and card["artifact"]["sha256"] == ref["sha256"]
    assert set(card["by_augmentation"]) == {"none", "no_call", "distractors"}
    # the default rate (0.2) gives about 0.3 no-call rows per original row; 0.6 must give far more
    assert card["by_augmentation"]["no_call"] > 0.6 * card["by_augmentation"]["none"]
    assert (tmp_path / "train.card.md").read_text().startswith("# Training set card")
    rows = [Example.from_row(r) for r in table.to_pylist()]
    near = [e for e in rows if e.meta.get("near_miss")]
    assert card["no_call_near_miss_rows"] == len(near) > 0 and all(not e.target for e in near)
    assert len(near) < card["by_augmentation"]["no_call"]  # half asked; generic-tool questions never qualify
    assert not any(e.meta.get("augmentation") in ("parallel", "renamed") for e in rows)


@needs_data
def test_cli_source_share_gives_every_source_the_same_no_call_share(tmp_path, capsys):
    from itool_core.cli import main

    plain, balanced = tmp_path / "plain.parquet", tmp_path / "balanced.parquet"
    assert main(["data", "build", "--profile", "quick", "--max-length", "0", "-o", str(plain)]) == 0
    assert (
        main(
            [
                "data",
                "build",
                "--profile",
                "quick",
                "--max-length",
                "0",
                "--no-call-source-share",
                "0.2",
                "-o",
                str(balanced),
            ]
        )
        == 0
    )
    assert "per source: apibank" in capsys.readouterr().out
    shares = {
        n: json.loads((tmp_path / f"{n}.card.json").read_text())["no_call_share_by_source"]
        for n in ("plain", "balanced")
    }
    # one global rate: the augmentations multiply BFCL's call rows, so its prompts rarely mean "no call"
    assert shares["plain"]["bfcl_unused"] < shares["plain"]["apibank"] - 0.08
    assert shares["balanced"] == {"apibank": pytest.approx(0.2, abs=0.03), "bfcl_unused": pytest.approx(0.2, abs=0.03)}
    # one source only: BFCL's share moves, API-Bank's stays where the global rate put it
    one = tmp_path / "one.parquet"
    assert (
        main(
            [
                "data",
                "build",
                "--profile",
                "quick",
                "--max-length",
                "0",
                "--no-call-source-share",
                "bfcl_unused=0.125",
                "-o",
                str(one),
            ]
        )
        == 0
    )
    share = json.loads((tmp_path / "one.card.json").read_text())["no_call_share_by_source"]
    assert share["bfcl_unused"] == pytest.approx(0.125, abs=0.02)
    assert share["apibank"] == pytest.approx(shares["plain"]["apibank"], abs=0.02)


def test_the_run_configs_build_section_defaults_to_the_builds_defaults():
    """``data: default`` in a run builds the set ``itool data build`` builds: BuildConfig's defaults are
    AugmentConfig's, and each knob reaches its field."""
    import dataclasses

    from itool_core.config import BuildConfig
    from itool_core.data import augment as aug
    from itool_core.data.build import from_config

    assert from_config(BuildConfig(), "quick") == {
        "profile": "quick",
        "augment": aug.AugmentConfig(),
        "max_length": True,
    }
    got = from_config(
        BuildConfig(
            profile="paper",
            augmentations=("parallel",),
            caps=False,
            max_share=0.1,
            no_call_rate=0.3,
            no_call_near_miss=0.5,
            max_length=0,
        ),
        "quick",
    )
    want = dataclasses.replace(
        aug.AugmentConfig(caps=aug.CapParams(max_share=0.1)),
        enabled=("parallel",),
        apply_caps=False,
        no_call=dataclasses.replace(aug.NoCallParams(), rate=0.3, near_miss=0.5),
    )
    assert got == {"profile": "paper", "augment": want, "max_length": None}
