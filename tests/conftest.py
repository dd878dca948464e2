import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"

# Offline by construction: nothing in the default test run may reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def load_bench(name: str):
    """A bench/ script as a module (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def tiny():
    """A seeded random model of SmolLM2's architecture with its real tokenizer."""
    from itool_core.models import tiny_model

    return tiny_model(seed=0)


@pytest.fixture(scope="session")
def smol_tokenizer():
    from itool_core.models import load_tokenizer

    return load_tokenizer()
