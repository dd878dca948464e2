"""Evaluation: BFCL v3 with bfcl-eval's own checkers (single-turn AST and relevance, multi-turn execution) and
API-Bank level-1/level-2 call accuracy, on any engine (:mod:`itool_core.engines`).

* :mod:`.bfcl` — single-turn scoring with ``bfcl_eval``'s ``ast_checker``; the v3 summary formula.
* :mod:`.bfcl_multi_turn` — multi-turn conversations run against bfcl's simulated APIs, scored by
  ``multi_turn_checker``; model text reaches the executor only as validated, canonical call text.
* :mod:`.apibank` — API-Bank call accuracy.
* :mod:`.runner` — ``evaluate(...)``, per-sample Parquet + ``summary.json``, Table 1/Table 2 printout, and
  the ``itool eval`` sub-command.
"""

from .runner import evaluate, format_tables

__all__ = ["evaluate", "format_tables"]
