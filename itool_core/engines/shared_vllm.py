"""One vLLM server per run: the generating stages reuse a started vLLM server and load their policy into it.

vLLM starts in about a minute on CPU (more under load) and each generating stage of a run — the evaluations,
every iteration's mining — serves a different policy of the same architecture.  Instead of a server per stage,
the first stage starts one (its owner is this process) and every later stage loads its policy's weights into
it in place: vLLM's ``reload_weights`` worker method through the ``/collective_rpc`` endpoint (enabled by
``VLLM_SERVER_DEV_MODE=1``; the server listens on 127.0.0.1 only), then ``/reset_prefix_cache`` (cached K/V
was computed with the old weights).  The pipeline's policies are merged folders (the LoRA of iteration i is
trained on the merged policy of iteration i−1), so a full reload is exact where a single LoRA adapter on the
base would have to stack every earlier adapter.  (vLLM 0.32 does not reload a tied output head in place: for
models with tied embeddings — SmolLM2 — a server is reused only for folders with the same embedding, which the
pipeline's LoRA never changes; measured exact: greedy ids equal, log-probs within 1e-6 of transformers.)

A server is reused only for a folder of the same architecture and tokenizer (``config.json`` and the tokenizer
files equal, up to names and versions) and the same serve settings, and only when no engine is using it with
another policy (mining shards of one policy on threads share it; a stage with another policy at the same time
starts its own).  Servers stay up until :func:`stop_shared_servers` or the process exits (``atexit``; a killed
process's servers get SIGTERM from the kernel, ``ServerProcess``).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["acquire", "stop_shared_servers", "policy_signature", "DEV_MODE_ENV"]

#: vLLM serves /collective_rpc and /reset_prefix_cache only in its development mode.
DEV_MODE_ENV = {"VLLM_SERVER_DEV_MODE": "1"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")
#: ``use_cache`` is a generation default (a folder saved by an older run after training says false).
_IGNORED_CONFIG_KEYS = {"_name_or_path", "transformers_version", "architectures_version", "use_cache"}


def policy_signature(folder: str | Path) -> str:
    """What must be equal for one server to serve two folders: the architecture and the tokenizer."""
    folder = Path(folder)
    cfg = json.loads((folder / "config.json").read_text())
    h = hashlib.sha256(
        json.dumps({k: v for k, v in cfg.items() if k not in _IGNORED_CONFIG_KEYS}, sort_keys=True).encode()
    )
    for name in _TOKENIZER_FILES:
        p = folder / name
        h.update(name.encode() + b"\0" + (p.read_bytes() if p.is_file() else b"-"))
    if cfg.get("tie_word_embeddings", cfg.get("text_config", {}).get("tie_word_embeddings", False)):
        # vLLM 0.32's in-place reload does not reload a tied output head: it keeps the previous embedding
        # (logged "ParallelLMHead: Failed to load weights").  The pipeline's LoRA ("all-linear") never changes
        # the embedding, so its policies share one; a folder with another embedding gets a server of its own.
        h.update(_embedding_digest(folder).encode())
    return h.hexdigest()


def _embedding_digest(folder: Path) -> str:
    import torch
    from safetensors import safe_open

    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                if k.endswith("embed_tokens.weight"):
                    t = st.get_tensor(k)
                    return hashlib.sha256(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
    return "-"


@dataclass
class _Entry:
    server: Any  # a started VLLMServer
    folder: str
    users: int = 0


_pool: dict[str, list[_Entry]] = {}
_pool_lock = threading.Lock()
_decide_lock = threading.Lock()


def _reload(server: Any, folder: str, timeout: float) -> None:
    import httpx

    url = server.base_url
    r = httpx.post(
        url + "/collective_rpc",
        json={"method": "reload_weights", "kwargs": {"weights_path": folder}},
        timeout=timeout,
    )
    if r.status_code >= 400:
        raise RuntimeError(f"{url}/collective_rpc reload_weights({folder}) answered HTTP {r.status_code}: {r.text}")
    r = httpx.post(url + "/reset_prefix_cache", timeout=timeout)
    if r.status_code >= 400:
        raise RuntimeError(f"{url}/reset_prefix_cache answered HTTP {r.status_code}: {r.text}")


def acquire(folder: str, settings: str, start: Callable[[], Any], timeout: float = 600.0) -> tuple[Any, Callable]:
    """A running vLLM server serving ``folder``, and the function that releases it (call it once, when done).

    ``settings``: a key of everything else the server was started with (python, dtype, slots, arguments);
    ``start``: starts a new server (with :data:`DEV_MODE_ENV` in its environment) when none can be reused."""
    folder = str(Path(folder).resolve())
    key = settings + "|" + policy_signature(folder)
    # one decision at a time: two mining shards of one policy must not both start a server
    with _decide_lock:
        with _pool_lock:
            entries = _pool.setdefault(key, [])
            chosen = next((e for e in entries if e.folder == folder and e.server.running), None)
            if chosen is None:
                chosen = next((e for e in entries if e.users == 0 and e.server.running), None)
            if chosen is not None:
                chosen.users += 1
        if chosen is not None and chosen.folder != folder:
            log.info("loading %s into the running vLLM server %s", folder, chosen.server.base_url)
            try:
                _reload(chosen.server, folder, timeout)
            except BaseException:
                with _pool_lock:
                    chosen.users -= 1
                raise
            chosen.folder = folder
        if chosen is None:
            # started from a thread that lives as long as the process: the server's parent-death signal
            # (ServerProcess) fires when the *thread* that spawned it ends, and stages run on worker threads
            chosen = _Entry(server=_starter().submit(start).result(), folder=folder, users=1)
            with _pool_lock:
                _pool.setdefault(key, []).append(chosen)
    entry = chosen
    released = threading.Event()

    def release() -> None:
        if released.is_set():
            return
        released.set()
        with _pool_lock:
            entry.users -= 1

    return entry.server, release


_executor: ThreadPoolExecutor | None = None


def _starter() -> ThreadPoolExecutor:
    global _executor
    with _pool_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shared-vllm")
        return _executor


def stop_shared_servers() -> None:
    """Stop every shared vLLM server this process started (also run at exit)."""
    with _pool_lock:
        entries = [e for es in _pool.values() for e in es]
        _pool.clear()
    for e in entries:
        e.server.stop()


atexit.register(stop_shared_servers)
