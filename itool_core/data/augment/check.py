"""Validity of a generated example: its target parses, round-trips, and passes bfcl-eval's own AST checker.

Every produced target must parse, serialise back to itself, have the argument types its schema declares and
pass bfcl-eval's ``ast_checker`` against the example's own tools with a possible answer built from the target
(:func:`possible_answer`).  The build keeps only examples that pass (``data.build``), and
``tests/test_augment.py`` runs it over the whole generated default set.  The verdict is bfcl-eval's: the
checker is reached through :mod:`itool_core.bfcl_checker`, below ``data`` and ``eval`` alike.
"""

from __future__ import annotations

import json
from typing import Any

from ...bfcl_checker import CHECKER_MODEL_NAME, ast_checker
from ...calls import calls_match, decode_answer, parse_calls, render_target, serialise_calls
from ..records import Example


def _pa_value(v: Any, schema: dict | None) -> Any:
    """A value in bfcl's possible-answer form: dict params hold a list of possible values per key."""
    t = (schema or {}).get("type")
    if t == "dict" and isinstance(v, dict):
        return {k: [x] for k, x in v.items()}
    if t in ("array", "tuple") and ((schema or {}).get("items") or {}).get("type") == "dict" and isinstance(v, list):
        return [{k: [x] for k, x in d.items()} if isinstance(d, dict) else d for d in v]
    return v


def possible_answer(ex: Example) -> list[dict]:
    """bfcl's possible-answer list for ``ex.target``: ``[{func: {arg: [value]}}]`` (one accepted value each)."""
    by_name = {t.get("name"): t for t in ex.tools}
    out = []
    for c in ex.target:
        props = ((by_name.get(c.name) or {}).get("parameters") or {}).get("properties") or {}
        out.append({c.name: {k: [_pa_value(v, props.get(k))] for k, v in c.arguments.items()}})
    return out


def checker_category(ex: Example) -> str:
    """The category to hand bfcl's ``ast_checker`` (it dispatches on "parallel" / "multiple" substrings)."""
    if not ex.target:
        return "irrelevance"
    if len(ex.target) > 1:
        return "parallel" if len({c.name for c in ex.target}) == 1 else "parallel_multiple"
    return "simple" if len(ex.tools) == 1 else "multiple"


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "float": (float, int),
    "boolean": (bool,),
    "array": (list,),
    "tuple": (list,),
    "dict": (dict,),
    "any": (object,),
}


def _type_error(value: Any, schema: dict, where: str) -> str | None:
    """The declared type (one level of ``items`` deep, as bfcl checks) that ``value`` does not have, if any."""
    t = schema.get("type") if isinstance(schema, dict) else None
    want = _PY_TYPES.get(t or "")
    if want is None:
        return f"{where}: type {t!r} unknown to bfcl's checker"
    if isinstance(value, bool) and t in ("integer", "float"):
        return f"{where}: boolean for a {t}"
    if not isinstance(value, want):
        return f"{where}: {type(value).__name__} for a {t}"
    if t in ("array", "tuple"):
        items = schema.get("items")
        if not isinstance(items, dict) or "type" not in items:
            return f"{where}: array without an items type"
        assert isinstance(value, list)  # the isinstance(value, want) above: want is (list,) for these types
        for i, v in enumerate(value):
            if isinstance(v, (list, dict)):
                continue  # bfcl checks one level deep
            err = _type_error(v, items, f"{where}[{i}]")
            if err:
                return err
    return None


def check_example(ex: Example) -> tuple[bool, str]:
    """Does the rendered target round-trip through our parser and pass bfcl's checker against its own tools?

    bfcl's checker takes a value whose type differs from the schema's as a "variable" when the possible answer
    has that same type — and our possible answer is built from the target — so every argument's type is
    first checked against its schema here (what the checker does with a benchmark's own possible answers).
    A no-call target must render as text that BFCL decodes to no call.
    """
    text = render_target(ex.target)
    if not ex.target:
        return (decode_answer(text) == [], "" if decode_answer(text) == [] else "no-call text decodes to a call")
    try:
        parsed = parse_calls(text)
    except Exception as e:  # noqa: BLE001 - report, do not raise
        return False, f"target does not parse: {e}"
    if not calls_match(parsed, ex.target, ordered=True) or serialise_calls(parsed) != text:
        return False, "target does not round-trip through parse/serialise"
    by_name = {t.get("name"): t for t in ex.tools}
    for c in ex.target:
        props = (((by_name.get(c.name) or {}).get("parameters") or {}).get("properties")) or {}
        for k, v in c.arguments.items():
            if k in props:
                err = _type_error(v, props[k], f"{c.name}.{k}")
                if err:
                    return False, f"type: {err}"
    checker, Language = ast_checker()  # installs the model-config stand-in before importing bfcl_eval
    try:
        res = checker(
            ex.tools,
            [c.to_bfcl() for c in ex.target],
            possible_answer(ex),
            Language.PYTHON,
            checker_category(ex),
            CHECKER_MODEL_NAME,
        )
    except Exception as e:  # noqa: BLE001 - a schema the checker cannot read is this example's failure
        return False, f"checker raised {type(e).__name__}: {e}"
    if res.get("valid"):
        return True, ""
    err = res.get("error")
    return False, f"{res.get('error_type', '')}: {err if isinstance(err, str) else json.dumps(err, default=str)[:300]}"
