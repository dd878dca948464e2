"""Augmentations (itool_core.data.augment): shapes, determinism, consistency, and bfcl's checker on every target.

Hand-made examples cover each augmentation's contract; one test runs bfcl-eval's own ``ast_checker`` (through
``itool_core.eval.bfcl.ast_checker``, which installs the model-config stand-in) over the whole generated
default set.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter

import pytest

from itool_core.calls import NO_CALL_TEXT, ToolCall, decode_answer, parse_calls, render_target, serialise_calls
from itool_core.data import augment as A
from itool_core.data.records import Example

HINT = " Note that the provided function is in Python 3 syntax."


def _tool(name: str, desc: str, params: dict[str, str], required: list[str] | None = None) -> dict:
    props = {p: {"type": t, "description": f"The {p.replace('_', ' ')}."} for p, t in params.items()}
    for p, t in params.items():
        if t == "array":
            props[p]["items"] = {"type": "integer"}
    return {
        "name": name,
        "description": desc + HINT,
        "parameters": {
            "type": "dict",
            "properties": props,
            "required": required if required is not None else list(params),
        },
    }


WEATHER = _tool("get_weather", "Get the current weather of a city.", {"city": "string", "unit": "string"}, ["city"])
AREA = _tool("geometry_area_circle", "Calculate the area of a circle from its radius.", {"radius": "float"})
FACT = _tool("math_factorial", "Compute the factorial of an integer.", {"n": "integer"})
STOCK = _tool(
    "get_stock_price_by_stock_name", "Look up the latest trading price of a company's shares.", {"stock_name": "string"}
)
TRANSLATE = _tool(
    "translate_text", "Translate a sentence into another language.", {"text": "string", "target_language": "string"}
)
MEAN = _tool("calculate_mean", "Arithmetic mean of a sequence.", {"numbers": "array"})
FLIGHT = _tool(
    "book_flight",
    "Reserve a seat on an airplane between two airports.",
    {"origin": "string", "destination": "string", "date": "string"},
)
TIMER = _tool("set_timer", "Start a countdown alarm.", {"minutes": "integer"})
SQL = _tool("sql.execute", "Run a SQL statement on the database.", {"sql_keyword": "string", "table_name": "string"})

_QA = [
    (WEATHER, "What's the weather like in Paris right now?", {"city": "Paris"}),
    (WEATHER, "Tell me the weather in Tokyo in celsius.", {"city": "Tokyo", "unit": "celsius"}),
    (WEATHER, "Is it raining in Lima?", {"city": "Lima"}),
    (AREA, "How big is a circle with radius 3?", {"radius": 3.0}),
    (AREA, "Find the area of a round table of radius 0.7 meters.", {"radius": 0.7}),
    (FACT, "What is 7 factorial?", {"n": 7}),
    (FACT, "Compute the factorial of 12.", {"n": 12}),
    (STOCK, "What does Apple trade at today?", {"stock_name": "AAPL"}),
    (TRANSLATE, "Say 'good morning' in German.", {"text": "good morning", "target_language": "German"}),
    (MEAN, "Average of 3, 5 and 10, please.", {"numbers": [3, 5, 10]}),
    (
        FLIGHT,
        "Reserve me a seat from SFO to JFK on 2024-05-01.",
        {"origin": "SFO", "destination": "JFK", "date": "2024-05-01"},
    ),
    (TIMER, "Wake me up in 20 minutes.", {"minutes": 20}),
    (SQL, "Show everything in the orders table.", {"sql_keyword": "SELECT", "table_name": "orders"}),
]


def _examples() -> list[Example]:
    out = []
    for i, (tool, q, args) in enumerate(_QA):
        out.append(
            Example(
                f"hand/{i:02d}",
                "handmade",
                "exec_simple",
                [copy.deepcopy(tool)],
                [{"role": "user", "content": q}],
                [ToolCall(tool["name"], dict(args))],
            )
        )
    # a "multiple"-style example and a dialogue (history mentions the called tool, as API-Bank's do)
    out.append(
        Example(
            "hand/multi",
            "handmade",
            "exec_multiple",
            [copy.deepcopy(TIMER), copy.deepcopy(FACT)],
            [{"role": "user", "content": "Compute the factorial of 5."}],
            [ToolCall("math_factorial", {"n": 5})],
        )
    )
    out.append(
        Example(
            "hand/dialogue",
            "handmade",
            "apibank_train",
            [copy.deepcopy(STOCK)],
            [
                {"role": "user", "content": "Price of Tesla shares?"},
                {"role": "assistant", "content": "[get_stock_price_by_stock_name(stock_name='TSLA')]"},
                {"role": "tool", "content": "{'price': 201.3}"},
                {"role": "user", "content": "And of Microsoft?"},
            ],
            [ToolCall("get_stock_price_by_stock_name", {"stock_name": "MSFT"})],
        )
    )
    return out


def _rows(exs):
    return [e.to_row() for e in exs]


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


AUG_FUNCS = {
    "no_call": (A.no_call, A.NoCallParams(rate=1.0)),
    "parallel": (A.parallel, A.ParallelParams(n_same=6, n_different=8)),
    "renamed": (A.renamed, A.RenameParams(rate=1.0)),
    "distractors": (A.distractors, A.DistractorParams(rate=1.0)),
}


# --------------------------------------------------------------------------------------------- no-call text


def test_no_call_text_decodes_as_abstention():
    assert render_target([]) == NO_CALL_TEXT
    assert decode_answer(render_target([])) == []


# ------------------------------------------------------------------------------------------ common contract


@pytest.mark.parametrize("name", list(AUG_FUNCS))
def test_deterministic_order_free_and_pure(name):
    fn, params = AUG_FUNCS[name]
    exs = _examples()
    before = _rows(exs)
    a = fn(exs, params, seed=1)
    assert a, f"{name} produced nothing on the hand-made set"
    assert _rows(exs) == before, "inputs were mutated"
    assert _rows(fn(exs, params, seed=1)) == _rows(a)
    assert _rows(fn(list(reversed(exs)), params, seed=1)) == _rows(a), "output depends on input order"
    seeds = {json.dumps(_rows(fn(exs, params, seed=s))) for s in range(4)}
    assert len(seeds) > 1, "the seed changes nothing"
    by_id = {e.id: e for e in exs}
    for e in a:
        assert e.meta["augmentation"] == name
        assert e.category.startswith("aug_")
        assert e.id.startswith("aug/")
        assert all(s in by_id for s in e.meta["sources"])
        assert e.source == by_id[e.meta["sources"][0]].source
        assert len({x.id for x in a}) == len(a)
        ok, why = A.check_example(e)
        assert ok, (e.id, why)


def test_augment_runs_each_independently():
    exs = _examples()
    cfg = A.AugmentConfig(
        no_call=A.NoCallParams(rate=1.0),
        renamed=A.RenameParams(rate=1.0),
        distractors=A.DistractorParams(rate=1.0),
        parallel=A.ParallelParams(n_same=4, n_different=4),
    )
    full = A.augment(exs, cfg, seed=3)
    assert set(full) == set(A.AUGMENTATIONS)
    part = A.augment(exs, cfg.without("parallel", "renamed"), seed=3)
    assert set(part) == {"no_call", "distractors"}
    for k in part:  # switching augmentations off leaves the others unchanged (ablation rows)
        assert _rows(part[k]) == _rows(full[k])
    assert A.augment(exs, A.AugmentConfig.none(), seed=3) == {}
    with pytest.raises(ValueError):
        cfg.without("nope")


# ------------------------------------------------------------------------------------------------- no_call


def test_no_call_shape():
    exs = _examples()
    out = A.no_call(exs, A.NoCallParams(rate=1.0, max_tools=2), seed=0)
    assert len(out) >= len(exs) // 2
    by_id = {e.id: e for e in exs}
    for e in out:
        src = by_id[e.meta["sources"][0]]
        assert e.target == [] and render_target(e.target) == NO_CALL_TEXT
        assert e.id == f"aug/nocall/{src.id}"
        names = {t["name"] for t in e.tools}
        assert 1 <= len(names) <= 2
        # none of the question's own tools, nor a generic one that could answer anything
        assert not names & {t["name"] for t in src.tools}
        assert not names & {c.name for c in src.target}
        assert "sql.execute" not in names
        # tools come from OTHER examples of the set
        assert all(any(t in o.tools for o in exs if o.id != src.id) for t in e.tools)
        # the question is the example's opening: its first user message, unchanged
        assert e.messages == src.messages[:1]
        qwords = {w for w in _norm(e.messages[-1]["content"]).split() if len(w) > 3}
        for t in e.tools:
            name_kw, _ = A.tool_keywords(t)
            assert not name_kw & qwords, (e.id, t["name"])
    # the dialogue's opening becomes a question of its own
    d = next(e for e in out if e.meta["sources"] == ["hand/dialogue"])
    assert d.meta["dialogue_cut"] and d.messages == [{"role": "user", "content": "Price of Tesla shares?"}]


def test_no_call_rejects_related_tools():
    q = Example(
        "q",
        "s",
        "c",
        [copy.deepcopy(AREA)],
        [{"role": "user", "content": "Area of a circle of radius 2?"}],
        [ToolCall("geometry_area_circle", {"radius": 2.0})],
    )
    related = _tool("geometry_area_square", "Area of a square.", {"side": "float"})
    other = Example(
        "o", "s", "c", [related], [{"role": "user", "content": "x"}], [ToolCall(related["name"], {"side": 1.0})]
    )
    # the only candidate shares "geometry"/"area" with the question's function: no no-call example is made
    assert [e for e in A.no_call([q, other], A.NoCallParams(rate=1.0), 0) if e.meta["sources"] == ["q"]] == []


def test_no_call_near_miss_keeps_the_topic_but_never_the_function():
    """near_miss: tools on the question's topic (BFCL irrelevance style), never one that shares a name keyword
    with the question's own function (it might answer), never for a question answered by a generic tool."""
    circle = Example(
        "q",
        "s",
        "c",
        [copy.deepcopy(AREA)],
        [{"role": "user", "content": "Area of a circle of radius 2?"}],
        [ToolCall("geometry_area_circle", {"radius": 2.0})],
    )
    tools = {
        "perimeter": _tool("round_shape_perimeter", "Perimeter of a circle from its radius.", {"radius": "float"}),
        "square": _tool("geometry_area_square", "Area of a square.", {"side": "float"}),  # shares "geometry", "area"
        "flight": FLIGHT,  # off topic
    }
    pool = [
        Example(
            f"o/{k}",
            "s",
            "c",
            [t],
            [{"role": "user", "content": "x"}],
            [ToolCall(t["name"], {p: 1.0 for p in t["parameters"]["properties"]})],
        )
        for k, t in tools.items()
    ]
    table = Example(
        "t",
        "s",
        "c",
        [copy.deepcopy(SQL)],
        [{"role": "user", "content": "Show the circle table."}],
        [ToolCall("sql.execute", {"sql_keyword": "SELECT", "table_name": "circle"})],
    )
    params = A.NoCallParams(rate=1.0, near_miss=1.0, max_tools=1)
    out = {e.meta["sources"][0]: e for e in A.no_call([circle, table, *pool], params, 0)}
    near = out["q"]
    assert near.meta["near_miss"] is True and near.target == []
    assert [t["name"] for t in near.tools] == ["round_shape_perimeter"]  # the one on-topic, differently named tool
    # the generic-tool question gets unrelated tools only (round_shape_perimeter's description says "circle")
    assert "near_miss" not in out["t"].meta
    assert "round_shape_perimeter" not in {t["name"] for t in out["t"].tools}
    # without near misses the same question gets no on-topic tool at all (the default, unchanged)
    plain = {
        e.meta["sources"][0]: e for e in A.no_call([circle, table, *pool], A.NoCallParams(rate=1.0, max_tools=1), 0)
    }
    assert "near_miss" not in plain["q"].meta and {t["name"] for t in plain["q"].tools} == {"book_flight"}
    # near_miss = 0 draws nothing extra from the seeded stream: earlier builds are reproduced
    exs = _examples()
    assert A.no_call(exs, A.NoCallParams(rate=0.7), 3) == A.no_call(exs, A.NoCallParams(rate=0.7, near_miss=0.0), 3)


def _two_sources():
    exs = [e for e in _examples() if len(e.messages) == 1]
    return [
        Example(f"{src}/{e.id}", src, e.category, e.tools, e.messages, e.target, dict(e.meta))
        for src in ("a", "b")
        for e in exs
    ]


def test_source_rates_equalise_the_no_call_share_per_source():
    exs = _two_sources()
    # source a's call examples are doubled by some augmentation, b's are not
    rows = exs + [
        Example(e.id + "/copy", e.source, e.category, e.tools, e.messages, e.target) for e in exs if e.source == "a"
    ]
    rates = A.source_rates(exs, rows, share=0.2)
    # n / (n + calls) = 0.2  <=>  n = calls / 4 = rate * questions
    assert rates == pytest.approx({"a": 0.5, "b": 0.25})
    assert A.source_rates(exs, rows, share=0.9)["a"] == 1.0  # never more than one copy per question
    # a question asked in two examples (two steps of one dialogue) is drawn twice but copied once:
    # 1 - (1 - r)^2 = 0.25  <=>  r = 1 - sqrt(0.75)
    twice = exs + [
        Example(e.id + "/step2", e.source, e.category, e.tools, e.messages, e.target) for e in exs if e.source == "b"
    ]
    assert A.source_rates(twice, exs, share=0.2)["b"] == pytest.approx(1 - 0.75**0.5)
    # the per-source rates drive the draw: all of a's questions, none of b's
    out = A.no_call(exs, A.NoCallParams(), 0, rates={"a": 1.0, "b": 0.0})
    assert out and {e.source for e in out} == {"a"}
    with pytest.raises(ValueError, match="source_share"):
        A.NoCallParams(source_share=1.0)
    # a share per source: only the named sources get a rate (the others keep NoCallParams.rate)
    assert A.source_rates(exs, rows, share={"b": 0.2}) == pytest.approx({"b": 0.25})
    with pytest.raises(ValueError, match=r"source_share\['a'\]"):
        A.NoCallParams(source_share={"a": 0.0})


def test_augment_with_a_share_for_one_source_leaves_the_other_at_the_rate():
    exs = _two_sources()
    rate = A.NoCallParams().rate
    out = A.augment(
        exs, A.AugmentConfig(no_call=A.NoCallParams(source_share={"a": 0.4}), enabled=("no_call",)), seed=3
    )["no_call"]
    assert hash(A.NoCallParams(source_share={"a": 0.4})) == hash(A.NoCallParams(source_share={"a": 0.4}))
    rates = A.source_rates(exs, exs, {"a": 0.4})
    assert set(rates) == {"a"}
    assert _rows(out) == _rows(A.no_call(exs, A.NoCallParams(), 3, {"a": rates["a"], "b": rate}))
    with pytest.raises(ValueError, match=r"names \['bfcl'\], not a source"):
        A.augment(exs, A.AugmentConfig(no_call=A.NoCallParams(source_share={"bfcl": 0.2})), seed=3)


def test_augment_with_source_share_rates_from_the_other_augmentations():
    exs = _two_sources()
    cfg = A.AugmentConfig(
        no_call=A.NoCallParams(source_share=0.3),
        renamed=A.RenameParams(rate=1.0),
        parallel=A.ParallelParams(n_same=4, n_different=4),
    )
    out = A.augment(exs, cfg, seed=3)
    others = [e for k, v in out.items() if k != "no_call" for e in v]
    rates = A.source_rates(exs, [*exs, *others], 0.3)
    assert _rows(out["no_call"]) == _rows(A.no_call(exs, cfg.no_call, 3, rates))
    plain = A.augment(
        exs,
        A.AugmentConfig(renamed=A.RenameParams(rate=1.0), parallel=A.ParallelParams(n_same=4, n_different=4)),
        seed=3,
    )
    assert {k: _rows(v) for k, v in plain.items() if k != "no_call"} == {
        k: _rows(v) for k, v in out.items() if k != "no_call"
    }


# ------------------------------------------------------------------------------------------------ parallel


def test_parallel_shape():
    exs = _examples()
    by_id = {e.id: e for e in exs}
    out = A.parallel(exs, A.ParallelParams(n_same=6, n_different=10), seed=0)
    variants = Counter(e.meta["variant"] for e in out)
    assert variants["same_function"] >= 3 and variants["different_function"] >= 5
    for e in out:
        members = [by_id[i] for i in e.meta["sources"]]
        assert 2 <= len(e.target) <= 4 and len(members) == len(e.target)
        assert e.id == "aug/parallel/" + "+".join(m.id for m in members)
        # the calls are the members' calls, in question order
        assert serialise_calls(e.target) == serialise_calls([c for m in members for c in m.target])
        # the union of the members' tools, deduplicated by name
        names = [t["name"] for t in e.tools]
        assert len(names) == len(set(names))
        assert set(names) == {t["name"] for m in members for t in m.tools}
        # one user message that asks every member's question
        assert [m["role"] for m in e.messages] == ["user"]
        text = _norm(e.messages[0]["content"])
        for m in members:
            assert _norm(m.messages[-1]["content"]) in text
        fn_names = [c.name for c in e.target]
        if e.meta["variant"] == "same_function":
            assert len(set(fn_names)) == 1 and e.category == "aug_parallel"
            assert A.checker_category(e) == "parallel"
        else:
            assert len(set(fn_names)) == len(fn_names) and e.category == "aug_parallel_multiple"
            assert A.checker_category(e) == "parallel_multiple"
        # never the same request twice
        assert len({serialise_calls([c]) for c in e.target}) == len(e.target)


def test_parallel_never_joins_dialogues_or_excluded_functions():
    exs = _examples()
    out = A.parallel(exs, A.ParallelParams(n_same=20, n_different=20, exclude_functions=("get_weather",)), seed=2)
    for e in out:
        assert "hand/dialogue" not in e.meta["sources"]
        assert "get_weather" not in {c.name for c in e.target}


def test_join_questions_styles():
    import random

    seen = set()
    for s in range(30):
        text, style = A.join_questions(["What is 2+2?", "Tell me a joke"], random.Random(s))
        seen.add(style)
        assert "What is 2+2?" in text and "ell me a joke." in text
        if style == "numbered":
            assert "\n1. What is 2+2?\n2. Tell me a joke." in text
    assert seen == {"connectors", "numbered", "plain"}


# ------------------------------------------------------------------------------------------------- renamed


def test_renamed_consistent_and_reversible():
    exs = _examples()
    by_id = {e.id: e for e in exs}
    out = A.renamed(exs, A.RenameParams(rate=1.0, param_prob=1.0), seed=0)
    assert len(out) >= len(exs) - 2
    n_param_renamed = 0
    for e in out:
        src = by_id[e.meta["sources"][0]]
        assert e.messages == src.messages  # question text unchanged
        fmap = e.meta["rename"]["functions"]
        assert all(c.name in fmap for c in src.target)  # the called function is always renamed
        assert all(c.name not in {x.name for x in src.target} for c in e.target)
        n_param_renamed += sum(len(m) for m in e.meta["rename"]["parameters"].values())
        for t in e.tools:
            props = t["parameters"]["properties"]
            assert set(t["parameters"]["required"]) <= set(props)
            for c in e.target:
                if c.name == t["name"]:
                    assert set(c.arguments) <= set(props)
        for c in e.target:  # names are valid call syntax
            assert parse_calls(serialise_calls([c]))[0].name == c.name
        back = A.unrename(e)
        assert back.tools == src.tools
        assert serialise_calls(back.target) == serialise_calls(src.target)
    assert n_param_renamed > len(out)  # parameters get renamed too
    # a name that the dialogue history shows is left alone
    assert all(e.meta["sources"] != ["hand/dialogue"] for e in out)


def test_renamed_names_vary():
    exs = _examples()
    names = Counter()
    for s in range(5):
        for e in A.renamed(exs, A.RenameParams(rate=1.0), seed=s):
            names.update(e.meta["rename"]["functions"].values())
    styles = {"camel": 0, "snake": 0, "dotted": 0}
    for n in names:
        styles["dotted"] += "." in n
        styles["camel"] += bool(re.search(r"[a-z][A-Z]", n))
        styles["snake"] += "_" in n
    assert all(v > 0 for v in styles.values()), styles


# ---------------------------------------------------------------------------------------------- distractors


def test_distractors_shape():
    exs = _examples()
    by_id = {e.id: e for e in exs}
    out = A.distractors(exs, A.DistractorParams(rate=1.0, max_tools=4), seed=0)
    assert len(out) >= len(exs) // 2
    for e in out:
        src = by_id[e.meta["sources"][0]]
        added = e.meta["added_tools"]
        assert 1 <= len(added) <= 3 and len(e.tools) == len(src.tools) + len(added) <= 4
        # the original tools keep their relative order; the target and messages are unchanged
        assert [t for t in e.tools if t["name"] not in added] == src.tools
        assert e.target == src.target and e.messages == src.messages
        assert not set(added) & {t["name"] for t in src.tools} and "sql.execute" not in added
        assert A.checker_category(e) == "multiple" or len(e.target) > 1


# ---------------------------------------------------------------------------------------------------- caps


def test_caps_respected_and_seeded():
    exs = []
    for i in range(60):  # f0 dominates: 40 of 60 calls
        name = "f0" if i < 40 else f"f{i}"
        exs.append(Example(f"c/{i:02d}", "s", "c", [], [{"role": "user", "content": str(i)}], [ToolCall(name, {})]))
    exs.append(Example("c/none", "s", "c", [], [{"role": "user", "content": "n"}], []))
    out = A.cap_functions(exs, A.CapParams(max_share=0.2), seed=0)
    counts = Counter(c.name for e in out for c in e.target)
    total = sum(counts.values())
    assert counts["f0"] <= 0.2 * total and counts["f0"] == 5  # 5 of 25 calls
    assert all(counts[f"f{i}"] == 1 for i in range(40, 60))
    assert any(e.id == "c/none" for e in out)  # no-call examples are never dropped
    assert [e.id for e in A.cap_functions(exs, A.CapParams(max_share=0.2), seed=0)] == [e.id for e in out]
    assert {e.id for e in A.cap_functions(exs, A.CapParams(max_share=0.2), seed=1)} != {e.id for e in out}
    # per-function overrides and drop_first
    loose = A.cap_functions(exs, A.CapParams(max_share=0.2, overrides=(("f0", 0.5),)), seed=0)
    assert Counter(c.name for e in loose for c in e.target)["f0"] == 20
    marked = {f"c/{i:02d}" for i in range(0, 40, 2)}
    first = A.cap_functions(exs, A.CapParams(max_share=0.2), seed=0, drop_first=lambda e: e.id in marked)
    kept_f0 = [e.id for e in first if e.target and e.target[0].name == "f0"]
    assert len(kept_f0) == 5 and not set(kept_f0) & marked
    # a function with fewer calls than min_calls is never cut
    few = A.cap_functions(exs[:3], A.CapParams(max_share=0.05, min_calls=3), seed=0)
    assert len(few) == 3


# ------------------------------------------------------------------------------------------------ checking


def test_check_example_catches_bad_targets():
    ex = _examples()[0]
    assert A.check_example(ex) == (True, "")
    assert A.checker_category(ex) == "simple"
    bad = Example("b", "s", "c", ex.tools, ex.messages, [ToolCall("get_weather", {"town": "Paris"})])
    ok, why = A.check_example(bad)
    assert not ok and "Missing required" in why
    wrong_type = Example("b", "s", "c", ex.tools, ex.messages, [ToolCall("get_weather", {"city": 3})])
    assert not A.check_example(wrong_type)[0]
    assert A.check_example(Example("n", "s", "c", ex.tools, ex.messages, []))[0]
    # dict-typed and list-of-dict parameters get bfcl's per-key possible answers
    tool = {
        "name": "f",
        "description": "d",
        "parameters": {
            "type": "dict",
            "required": ["cfg", "rows"],
            "properties": {
                "cfg": {"type": "dict", "properties": {"a": {"type": "integer"}}},
                "rows": {"type": "array", "items": {"type": "dict"}},
            },
        },
    }
    e = Example("d", "s", "c", [tool], ex.messages, [ToolCall("f", {"cfg": {"a": 1}, "rows": [{"x": "y"}]})])
    assert A.check_example(e) == (True, "")


# ---------------------------------------------------------------------------------- the whole default set


@pytest.fixture(scope="module")
def default_augmented():
    from itool_core.data.apibank import default_apibank_dir
    from itool_core.data.build import build_training_set

    if not (default_apibank_dir() / "lv3-api-train.json").exists():
        pytest.skip("API-Bank data not found")
    # the whole generated set before the length fit (which only trims tool lists or drops examples)
    examples, card = build_training_set("quick", max_length=None)
    return examples, card


def test_every_generated_target_passes_bfcl_checker(default_augmented):
    examples, card = default_augmented
    assert set(card["by_augmentation"]) == {"none", *A.AUGMENTATIONS}
    failures = []
    kinds = Counter()
    for e in examples:
        text = render_target(e.target)
        if e.target:
            assert serialise_calls(parse_calls(text)) == text
        else:
            assert decode_answer(text) == []
        kinds[A.checker_category(e)] += 1
        ok, why = A.check_example(e)
        if not ok:
            failures.append((e.id, why))
    assert not failures, failures[:10]
    assert all(kinds[k] > 50 for k in ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance")), kinds


def test_renamed_default_set_reverses(default_augmented):
    examples, _ = default_augmented
    ren = [e for e in examples if e.meta.get("augmentation") == "renamed"]
    assert len(ren) > 50
    for e in ren:
        back = A.unrename(e)
        assert {t["name"] for t in back.tools} >= {c.name for c in back.target}
        assert not {c.name for c in e.target} & set(e.meta["rename"]["functions"])
