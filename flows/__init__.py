"""Orchestration layer, part 2: the Prefect flows and the ``itool`` command.

``itool`` (flows/iterate.py, deployment ``itool/iterate``) — the whole method, the one definition ``itool run`` /
``itool demo`` / ``make demo`` and the deployment all run; ``itool-mine`` (flows/mine.py) — its mining sub-flow
on threads or Dask; ``itool-evaluate`` (flows/evaluate.py) — one model on BFCL + API-Bank.  Flows call the
stage tasks (tasks/stages.py) and log through tasks/tracking.py; nothing in itool_core knows about them.
"""
