"""iTool core: data, prompts, models, search and training as plain functions (no orchestration imports)."""

__version__ = "0.1.0"
