"""Orchestration layer, part 1: thin Prefect tasks over the core stages (``stages``) and MLflow tracking
(``tracking``).  Depends on ``itool_core``; never on ``flows`` (tests/test_architecture.py)."""
