"""What a "step" is in the step-level search (§4.3): one tool call of the answer, or one sentence of text.

An answer in the pipeline's format is ``[f(a=1), g(b='x')]``.  Its steps are the calls with their trailing
delimiter: ``[f(a=1),`` then `` g(b='x')]``.  The delimiter tells the search what happened: a step ending in
``,`` leaves the call list open (non-terminal), one ending in ``]`` closes the answer (terminal).  Text that
does not open a call list (e.g. "None of the given functions can be used...") is a text answer, split at
sentence ends; the end of generation makes it terminal.  This is the paper's definition; the authors'
release splits at ``. , = (``, so its "steps" are fragments of a call
(docs/design.md#the-authors-release-differs-from-the-paper).

:func:`first_step_end` scans text with a bracket/string-aware state machine, so a ``),`` inside a string
argument is not mistaken for a step boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Stop strings for generating one step with an engine that supports them: they fire at the end of a call.
#: A stop inside a string literal is detected by :func:`first_step_end` and generation continues.
CALL_STOP_STRINGS = ("),", ")]")
SENTENCE_ENDS = (". ", ".\n", "! ", "? ")


@dataclass(frozen=True)
class StepEnd:
    index: int  # characters of the text that form the step
    terminal: bool  # True if the step closes the answer


def _in_call_list(prefix: str) -> bool:
    return prefix.lstrip().startswith("[")


def first_step_end(text: str, answer_so_far: str = "") -> StepEnd | None:
    """Where the first step of ``text`` ends, given the steps already taken (``answer_so_far``).

    Returns ``None`` if ``text`` holds no complete step yet (generation must go on, or it ran out).
    """
    full = answer_so_far + text
    if not full.strip():
        return None
    if not _in_call_list(full):
        # A text answer: one sentence per step.
        best = None
        for end in SENTENCE_ENDS:
            i = text.find(end)
            if i != -1 and (best is None or i < best):
                best = i
        return StepEnd(best + 1, False) if best is not None else None
    depth = 0
    quote: str | None = None
    escaped = False
    # Replay the answer so far to know the scanner state at the start of `text`.
    start = len(answer_so_far)
    for pos, ch in enumerate(full):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in ("'", '"'):
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0 and ch == "]" and pos >= start:
                return StepEnd(pos - start + 1, True)
        elif ch == "," and depth == 1 and pos >= start:
            # a comma at the call-list level: a call just ended
            return StepEnd(pos - start + 1, False)
    return None


def split_steps(answer: str, prefix: str = "") -> list[tuple[str, bool]]:
    """Split ``answer`` (which continues the steps already taken, ``prefix``) into ``(step_text, terminal)``.

    The remainder after the last complete step, if any, is a last step marked terminal (generation ended
    there).  ``"".join(text for text, _ in split_steps(a)) == a`` always holds.
    """
    steps: list[tuple[str, bool]] = []
    done = prefix
    rest = answer
    while rest:
        end = first_step_end(rest, done)
        if end is None:
            steps.append((rest, True))
            break
        steps.append((rest[: end.index], end.terminal))
        done += rest[: end.index]
        rest = rest[end.index :]
        if end.terminal:
            if rest.strip():
                # text after the closing bracket belongs to the terminal step
                steps[-1] = (steps[-1][0] + rest, True)
            break
    return steps
