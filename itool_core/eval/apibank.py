"""API-Bank level-1 / level-2 call accuracy (Li et al., 2023), as the iTool paper reports it (Table 2).

Each item asks for one API call given API descriptions and a dialogue; the reference is the item's
``expected_output`` ``API-Request: [ApiName(key='value', ...)]`` (read by the loader into ``Example.target``,
repairs noted in ``meta["target_notes"]``).

* **Prompt.**  Default ``prompt="ours"``: the project's one prompt (:func:`itool_core.calls.render_prompt` with
  the item's tools and dialogue), the format the policy is trained on.  ``prompt="native"``: API-Bank's own
  text, one user message made of the item's ``instruction`` and ``input`` (API descriptions, the dialogue and
  "Generate API Request:"), for comparison with numbers reported on the original prompt.
* **Decoding.**  A leading ``API-Request:`` is stripped, then the text is parsed by our parser
  (:func:`itool_core.calls.parse_calls`: ``ast`` only, literal arguments) — ``[Name(k='v')]`` and
  ``Name(k='v')`` both decode.  API-Bank's own evaluator extracts the call with a regex and then executes it
  against its API simulators and compares results; we compare the call itself.
* **Correct** when the output holds exactly one call, its API name equals the reference's, and the argument
  dicts are equal after normalising values: strings are stripped, lower-cased and their whitespace collapsed;
  numbers and numeric strings compare as numbers (``5`` = ``'5'`` = ``5.0``; an integer past the float
  range compares exactly instead of raising); booleans compare with their
  text (``True`` = ``'true'``); a string holding a list/dict literal compares as that list/dict (the data
  write some lists as quoted text); lists and dicts compare element-wise.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Sequence
from typing import Any

from ..calls import PromptStyle, ToolCall, number_key, render_prompt, try_parse_calls
from ..config import APIBANK_PROMPTS as PROMPTS
from ..data.records import Example
from .bfcl import SampleScore

__all__ = ["PROMPTS", "decode_request", "normalise_value", "normalise_arguments", "score_apibank", "apibank_prompts"]

_MAX_LITERAL_CHARS = 10_000  # a string value is only read as a list/dict literal below this size


def decode_request(text: str) -> tuple[list[ToolCall] | None, str | None]:
    """Model text → calls: strip a leading ``API-Request:`` then parse with our parser (never executed)."""
    s = (text if isinstance(text, str) else "").strip()
    if s.startswith("API-Request:"):
        s = s[len("API-Request:") :].strip()
    return try_parse_calls(s)


_NUM = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _number(s: str) -> float | None:
    if not _NUM.match(s):
        return None
    try:
        v = float(s)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def normalise_value(v: Any, _depth: int = 0) -> Any:
    """A comparable form of an argument value (see the module docstring for the rules)."""
    if _depth > 32:
        return ("deep", repr(v))
    if isinstance(v, bool):
        return ("str", "true" if v else "false")
    if isinstance(v, (int, float)):
        return number_key(v)  # an int beyond every float must not abort the whole evaluation
    if v is None:
        return ("str", "none")
    if isinstance(v, str):
        s = " ".join(v.split()).lower()
        n = _number(s)
        if n is not None:
            return ("num", n)
        if s[:1] in "[{" and len(s) < _MAX_LITERAL_CHARS:
            try:
                # literal_eval builds containers of constants only: nothing in the text is executed.
                parsed = ast.literal_eval(v.strip())
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                parsed = None
            if isinstance(parsed, (list, tuple, dict)):
                return normalise_value(parsed, _depth + 1)
        return ("str", s)
    if isinstance(v, (list, tuple)):
        return ("list", tuple(normalise_value(x, _depth + 1) for x in v))
    if isinstance(v, dict):
        return ("dict", tuple(sorted((str(k).strip().lower(), normalise_value(x, _depth + 1)) for k, x in v.items())))
    return ("other", repr(v))


def normalise_arguments(args: dict[str, Any]) -> dict[str, Any]:
    return {k: normalise_value(v) for k, v in args.items()}


def score_apibank(ex: Example, text: str) -> SampleScore:
    calls, err = decode_request(text)
    if calls is None:
        return SampleScore(False, None, f"output does not decode as a call: {err}", "apibank:decoder_failed")
    if not ex.target:
        return SampleScore(False, calls, "item has no reference call", "apibank:no_reference")
    gold = ex.target[0]
    if len(calls) != 1:
        return SampleScore(False, calls, f"expected exactly one call, got {len(calls)}", "apibank:wrong_count")
    call = calls[0]
    if call.name != gold.name:
        return SampleScore(False, calls, f"API {call.name!r}, expected {gold.name!r}", "apibank:wrong_api")
    got, want = normalise_arguments(call.arguments), normalise_arguments(gold.arguments)
    if set(got) != set(want):
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        return SampleScore(
            False, calls, f"arguments differ: missing {missing}, unexpected {extra}", "apibank:wrong_keys"
        )
    bad = [k for k in want if got[k] != want[k]]
    if bad:
        k = bad[0]
        return SampleScore(
            False,
            calls,
            f"value of {k!r}: {call.arguments[k]!r}, expected {gold.arguments[k]!r}",
            "apibank:wrong_value",
        )
    return SampleScore(True, calls)


def native_messages(ex: Example) -> list[dict]:
    """API-Bank's own prompt text as one user message: the instruction, then the input."""
    instruction = str(ex.meta.get("instruction", "")).strip()
    inp = str(ex.meta.get("input", "")).strip()
    return [{"role": "user", "content": f"{instruction}\n{inp}".strip()}]


def apibank_prompts(
    tokenizer, examples: Sequence[Example], prompt: str = "ours", style: PromptStyle = PromptStyle()
) -> list[str]:
    if prompt not in PROMPTS:
        raise ValueError(f"unknown API-Bank prompt {prompt!r} ({'|'.join(PROMPTS)})")
    if prompt == "ours":
        return [render_prompt(tokenizer, ex.tools, ex.messages, style) for ex in examples]
    return [
        tokenizer.apply_chat_template(native_messages(ex), tokenize=False, add_generation_prompt=True)
        for ex in examples
    ]
