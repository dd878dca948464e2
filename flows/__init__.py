"""Orchestration layer, part 2: the Prefect flows.

``itool`` (flows/iterate.py, deployment ``itool/iterate``) — the whole method; ``itool-warmup``
(flows/warmup.py) — data, split and curriculum SFT; ``itool-evaluate`` (flows/evaluate.py) — one model on
BFCL + API-Bank.  ``python -m flows.cli`` runs any of them locally.  Flows call tasks (tasks/stages.py) and
log through tasks/tracking.py; nothing in itool_core knows about them.
"""
