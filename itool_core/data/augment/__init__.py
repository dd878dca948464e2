"""Training-data augmentations that teach what the benchmarks test: abstention, parallel calls, reading the schema.

Warm-up SFT on the embedded sources alone makes a model that always calls, emits one call, and recalls memorised
function names (measured: docs/notebook/augment.md; docs/design.md#what-sft-on-the-embedded-data-does).  Each
augmentation answers one of those, one module per kind:

* :func:`no_call` (:mod:`.nocall`) → BFCL irrelevance / live_irrelevance: a question with tools that cannot
  answer it, target "no call";
* :func:`parallel` (:mod:`.multicall`) → BFCL parallel / parallel_multiple: 2–4 questions joined, all their calls;
* :func:`renamed` (:mod:`.rename`) → simple / multiple / live_*: names rewritten, so they must be read from the
  schema;
* :func:`distractors` (:mod:`.distract`) → BFCL multiple: unrelated tools added, pick the right one.

:func:`cap_functions` (:mod:`.caps`) runs before them; :func:`augment` (:mod:`.pipeline`) runs them all;
:func:`check_example` (:mod:`.check`) is the validity test every produced target passes (bfcl-eval's checker).
Shared pieces: :mod:`.common` (seeded streams, provenance of a new example) and :mod:`.keywords` (is a tool
related to a question).
"""

from .caps import CapParams, cap_functions
from .check import check_example, checker_category, possible_answer
from .common import approx_chars, is_single_turn, question_text
from .distract import DistractorParams, distractors
from .keywords import GENERIC_TOOLS, tool_keywords
from .multicall import ParallelParams, join_questions, parallel
from .nocall import NoCallParams, no_call, source_rates
from .pipeline import AUGMENTATIONS, AugmentConfig, augment
from .rename import RenameParams, renamed, unrename

__all__ = [
    "AUGMENTATIONS",
    "GENERIC_TOOLS",
    "CapParams",
    "NoCallParams",
    "ParallelParams",
    "RenameParams",
    "DistractorParams",
    "AugmentConfig",
    "cap_functions",
    "no_call",
    "source_rates",
    "parallel",
    "renamed",
    "unrename",
    "distractors",
    "augment",
    "is_single_turn",
    "approx_chars",
    "join_questions",
    "question_text",
    "tool_keywords",
    "possible_answer",
    "checker_category",
    "check_example",
]
