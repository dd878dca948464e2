"""``renamed``: copies whose function and parameter names are rewritten consistently (BFCL simple / multiple).

The embedded sets call few distinct functions, so a small model memorises their names instead of reading them
from the schema.  A renamed copy rewrites the names in the tools, the ``required`` lists and the target
(synonyms, namespace prefixes, camelCase ↔ snake_case ↔ PascalCase) and leaves the question unchanged: the
only way to answer is to copy the names from the tool list.  :func:`unrename` inverts it (consistency test).
"""

from __future__ import annotations

import copy
import keyword
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ...calls import ToolCall
from ..records import Example
from .common import _new, _rng, _sorted, approx_chars, is_single_turn
from .keywords import _name_tokens


@dataclass(frozen=True)
class RenameParams:
    #: Share of the eligible examples that get one renamed copy.
    rate: float = 0.4
    #: Probability that a given parameter is renamed (the function name always is).
    param_prob: float = 0.7
    #: Skip sources longer than this (see :attr:`ParallelParams.max_chars`): a copy of an example that does not
    #: fit the length budget would only be dropped again.
    max_chars: int = 2400


# A small vocabulary of plausible API-name synonyms.  Both directions are listed where both are natural.
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "get": ("fetch", "retrieve", "obtain", "lookup", "query", "read"),
    "fetch": ("get", "retrieve", "load"),
    "retrieve": ("get", "fetch", "obtain"),
    "calculate": ("compute", "calc", "evaluate", "determine"),
    "calc": ("compute", "calculate"),
    "compute": ("calculate", "calc", "evaluate"),
    "find": ("search", "locate", "lookup", "discover"),
    "search": ("find", "lookup", "query", "seek"),
    "create": ("make", "new", "add", "build"),
    "add": ("insert", "append", "create", "register"),
    "delete": ("remove", "erase", "drop"),
    "remove": ("delete", "erase", "drop"),
    "update": ("modify", "edit", "change", "patch"),
    "book": ("reserve", "schedule"),
    "check": ("verify", "inspect", "validate"),
    "convert": ("transform", "translate"),
    "send": ("post", "dispatch", "submit", "deliver"),
    "order": ("purchase", "request"),
    "estimate": ("approximate", "predict", "forecast"),
    "schedule": ("plan", "arrange", "book"),
    "record": ("log", "save", "store"),
    "query": ("request", "lookup", "search"),
    "number": ("num", "count"),
    "num": ("number", "count"),
    "temperature": ("temp",),
    "information": ("info", "details"),
    "info": ("details", "information"),
    "details": ("info", "data"),
    "maximum": ("max", "upper"),
    "max": ("maximum", "upper"),
    "minimum": ("min", "lower"),
    "min": ("minimum", "lower"),
    "quantity": ("qty", "amount", "count"),
    "amount": ("amt", "sum", "quantity"),
    "price": ("cost", "rate"),
    "cost": ("price", "expense"),
    "name": ("title", "label"),
    "id": ("identifier", "key", "uid"),
    "date": ("day", "when"),
    "time": ("duration", "period"),
    "location": ("place", "loc", "site"),
    "city": ("town", "municipality"),
    "country": ("nation", "region"),
    "value": ("val", "amount"),
    "initial": ("init", "start", "starting"),
    "final": ("end", "last"),
    "start": ("begin", "initial", "first"),
    "end": ("stop", "final", "last"),
    "user": ("customer", "account", "person"),
    "customer": ("client", "user", "buyer"),
    "type": ("kind", "category"),
    "category": ("kind", "group"),
    "rate": ("ratio", "pct"),
    "description": ("desc", "summary"),
    "message": ("msg", "text"),
    "address": ("addr",),
    "duration": ("length", "period"),
    "year": ("yr",),
    "years": ("yrs", "period"),
    "stock": ("ticker", "equity", "share"),
    "weather": ("forecast", "climate"),
    "distance": ("dist", "length"),
    "area": ("surface", "size"),
    "radius": ("rad", "r"),
    "total": ("sum", "overall"),
    "list": ("items", "collection"),
    "table": ("tbl", "relation"),
    "columns": ("cols", "fields"),
    "conditions": ("filters", "where_clauses"),
    "keywords": ("terms", "query"),
    "patient": ("person", "subject"),
    "doctor": ("physician", "clinician"),
    "appointment": ("booking", "visit"),
    "product": ("item", "goods"),
    "email": ("mail", "email_address"),
    "phone": ("telephone", "mobile"),
    "password": ("passwd", "secret"),
    "username": ("user_name", "login"),
    "movie": ("film",),
    "food": ("meal", "dish"),
    "restaurant": ("eatery", "diner"),
    "hotel": ("lodging", "accommodation"),
    "flight": ("plane", "air_trip"),
    "event": ("occasion", "happening"),
    "status": ("state", "condition"),
    "score": ("rating", "points"),
    "speed": ("velocity", "pace"),
    "velocity": ("speed",),
    "acceleration": ("accel",),
    "function": ("func", "fn"),
    "limit": ("cap", "max_items"),
    "currency": ("money", "denomination"),
    "source": ("src", "origin"),
    "target": ("dest", "destination"),
    "destination": ("dest", "target"),
    "origin": ("src", "from_place"),
    "latitude": ("lat",),
    "longitude": ("lon", "lng"),
    "coordinates": ("coords", "position"),
}
_PREFIXES = ("api", "svc", "tools", "util", "app", "lib", "service", "core", "ext")
_VERB_PREFIXES = ("do", "run", "perform", "request")


def _style(tokens: Sequence[str], style: str) -> str:
    tokens = [t for t in tokens if t]
    if style == "camel":
        return tokens[0] + "".join(t[:1].upper() + t[1:] for t in tokens[1:])
    if style == "pascal":
        return "".join(t[:1].upper() + t[1:] for t in tokens)
    return "_".join(tokens)


def _ident_ok(s: str) -> bool:
    return s.isidentifier() and not keyword.iskeyword(s) and s not in ("True", "False", "None")


def _rename_tokens(tokens: list[str], rng: random.Random, prob: float) -> list[str]:
    out = []
    for t in tokens:
        syn = _SYNONYMS.get(t)
        if syn and rng.random() < prob:
            out += rng.choice(syn).split("_")
        else:
            out.append(t)
    return out


def _new_function_name(name: str, rng: random.Random, style: str) -> str:
    """A plausible different name: synonyms, namespace prefix changes, another case convention."""
    module, _, base = name.rpartition(".")
    tokens = _name_tokens(base) or ["fn"]
    tokens = _rename_tokens(tokens, rng, 0.6)
    r = rng.random()
    if module and r < 0.4:
        # fold the namespace into the name: math.factorial → math_factorial / mathFactorial
        tokens = _name_tokens(module) + tokens
        module = ""
    elif not module and r < 0.3:
        module = rng.choice(_PREFIXES)
    elif r < 0.4 and tokens[0] not in _SYNONYMS:
        tokens = [rng.choice(_VERB_PREFIXES)] + tokens
    base_new = _style(tokens, style)
    if not _ident_ok(base_new):
        base_new = "fn_" + "_".join(tokens)
    return f"{module}.{base_new}" if module else base_new


_PARAM_PREFIXES = ("input", "target", "given", "the")
_PARAM_SUFFIXES = ("value", "val", "param", "arg", "input")


def _new_param_name(name: str, rng: random.Random, style: str) -> str:
    orig = _name_tokens(name) or ["arg"]
    tokens = _rename_tokens(orig, rng, 0.7)
    if tokens == orig and (len(tokens) == 1 or style == "snake"):
        # no synonym and no visible case change: add an affix, as real APIs do (n → n_value, city → target_city)
        if rng.random() < 0.5:
            tokens = [rng.choice(_PARAM_PREFIXES)] + tokens
        else:
            tokens = tokens + [rng.choice(_PARAM_SUFFIXES)]
    new = _style(tokens, style)
    return new if _ident_ok(new) else "arg_" + "_".join(tokens)


def _mentioned(name: str, text: str) -> bool:
    return re.search(r"(?<![\w.])" + re.escape(name) + r"(?![\w])", text) is not None


def _rename_example(
    ex: Example, fmap: dict[str, str], pmap: dict[str, dict[str, str]]
) -> tuple[list[dict], list[ToolCall]]:
    """Apply a function map and per-(old)function parameter maps to the tools and target."""
    tools = []
    for t in ex.tools:
        t2 = copy.deepcopy(t)
        old = t["name"]
        t2["name"] = fmap.get(old, old)
        pm = pmap.get(old, {})
        params = t2.get("parameters")
        if pm and isinstance(params, dict):
            props = params.get("properties") or {}
            params["properties"] = {pm.get(k, k): v for k, v in props.items()}
            if isinstance(params.get("required"), list):
                params["required"] = [pm.get(k, k) for k in params["required"]]
        tools.append(t2)
    target = [
        ToolCall(
            fmap.get(c.name, c.name), {pmap.get(c.name, {}).get(k, k): copy.deepcopy(v) for k, v in c.arguments.items()}
        )
        for c in ex.target
    ]
    return tools, target


def renamed(examples: Sequence[Example], params: RenameParams = RenameParams(), seed: int = 0) -> list[Example]:
    """Copies with function and parameter names rewritten consistently (tools, ``required``, target).

    The question text is unchanged, so the only way to answer is to copy the names from the schema.  One
    naming convention (snake/camel/pascal) is drawn per example, as a real API has one.  Names that appear in
    any message (the question, a dialogue's earlier calls or tool results) are left alone: renaming them would
    contradict the text.  Nested (dict) property names are unchanged.  ``meta["rename"]`` holds the forward
    maps; :func:`unrename` inverts them.
    """
    rng = _rng(seed, "renamed")
    out: list[Example] = []
    for ex in _sorted(examples):
        if not ex.target or rng.random() >= params.rate:
            continue
        if approx_chars(ex.tools, ex.messages, ex.target) > params.max_chars:
            continue
        text = "\n".join(str(m.get("content") or "") for m in ex.messages)
        names = [t["name"] for t in ex.tools]
        if any(_mentioned(c.name, text) for c in ex.target):
            continue
        fstyle = rng.choice(("snake", "snake", "camel", "pascal"))
        pstyle = rng.choice(("snake", "snake", "camel"))
        fmap: dict[str, str] = {}
        taken = set(names)
        for n in names:
            if _mentioned(n, text):
                continue
            for _ in range(8):
                new = _new_function_name(n, rng, fstyle)
                if new != n and new not in taken:
                    fmap[n] = new
                    taken.add(new)
                    break
        if not any(c.name in fmap for c in ex.target):
            continue
        pmap: dict[str, dict[str, str]] = {}
        for t in ex.tools:
            props = (t.get("parameters") or {}).get("properties") or {}
            ptaken = set(props)
            m: dict[str, str] = {}
            for p in props:
                if rng.random() >= params.param_prob or _mentioned(p, text) and not is_single_turn(ex):
                    continue
                for _ in range(4):
                    new = _new_param_name(p, rng, pstyle)
                    if new != p and new not in ptaken:
                        m[p] = new
                        ptaken.add(new)
                        break
            if m:
                pmap[t["name"]] = m
        tools, target = _rename_example(ex, fmap, pmap)
        out.append(
            _new(
                ex,
                "renamed",
                f"aug/renamed/{ex.id}",
                "aug_renamed",
                tools,
                ex.messages,
                target,
                rename={"functions": fmap, "parameters": pmap},
            )
        )
    return out


def unrename(ex: Example) -> Example:
    """Invert :func:`renamed` (tools and target back to the original names); used by the consistency test."""
    r = ex.meta["rename"]
    fmap = {new: old for old, new in r["functions"].items()}
    pmap = {r["functions"].get(f, f): {new: old for old, new in m.items()} for f, m in r["parameters"].items()}
    tools, target = _rename_example(ex, {}, pmap)
    tools, target = _rename_example(Example(ex.id, ex.source, ex.category, tools, ex.messages, target), fmap, {})
    meta = {k: v for k, v in ex.meta.items() if k != "rename"}
    return Example(ex.id, ex.source, ex.category, tools, copy.deepcopy(ex.messages), target, meta)
