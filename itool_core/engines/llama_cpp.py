"""llama.cpp on CPU: a policy folder as GGUF, the native ``llama-server`` binary, and its process.

The served engine (:mod:`itool_core.engines.openai`) talks to an OpenAI-compatible server; on a CPU machine that
server is llama.cpp's native ``llama-server`` (docs/design.md#served-engine: how it is driven and how fast it is
here).  This module provides the three things it needs, none of which imports anything heavier than
numpy/gguf/safetensors:

* :func:`gguf_for` — a merged HF model folder (Llama architecture: SmolLM2) written as a GGUF file with the
  ``gguf`` package, cached under ``$ITOOL_HOME/gguf/<content hash of the folder>-<dtype>.gguf``.  The
  tokenizer metadata (``tokenizer.ggml.*``, chat template) is copied from the embedded GGUF of
  :func:`itool_core.models.embedded_gguf`, the hyper-parameters come from the folder's ``config.json``.  Q and K
  projections are permuted into llama.cpp's rotary layout (the inverse of what transformers' GGUF loader
  does on load).  The default ``f32`` keeps the served model's arithmetic that of the transformers engine
  (the contract test compares greedy token ids); ``f16`` / ``q8_0`` shrink the file
  (:func:`.serve.llama_server` serves ``q8_0`` with ``--no-repack``: the repacked Q8_0 kernels crashed
  llama-server on a Xeon with AMX here).
* :func:`llama_server_binary` / :func:`build_llama_server` — ``llama-server`` compiled once from the llama.cpp
  sources that the ``llama-cpp-python`` sdist vendors (PyPI has no binary of it), into a folder keyed by the
  sdist version and this CPU's instruction set: ``$ITOOL_LLAMA_DIR`` (default
  ``~/.cache/itool/llama-server``), outside the clone, so a clean clone (CI) reuses it as pip reuses a
  wheel.  ``make install`` runs ``itool serve build`` (itool_core/cli/serve.py).  The native server rather than
  ``python -m llama_cpp.server``: only the native one has parallel slots (``-np``) with continuous batching,
  which the tree search's many short concurrent requests need.
* :class:`LlamaServer` — the process on ``127.0.0.1`` and a free port, started, waited on (``/health``) and
  stopped (SIGTERM, then SIGKILL) by a context manager, with its log in a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "write_gguf",
    "gguf_for",
    "llama_server_binary",
    "build_llama_server",
    "LlamaServer",
    "free_port",
    "LLAMA_CPP_PYTHON_VERSION",
]

#: The sdist whose vendored llama.cpp is built (the version docs/design.md#served-engine measured).
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
#: One version of the GGUF writer's output; bump when :func:`write_gguf` changes what it writes.
GGUF_WRITER_VERSION = 1

# HF Llama parameter names → GGUF tensor names (llama.cpp's LLM_ARCH_LLAMA).
_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


# ------------------------------------------------------------------------------------------------ GGUF


def _permute_rotary(w, n_head: int):
    """HF's rotary layout (halves) → llama.cpp's (interleaved pairs) for a Q or K projection, rows = heads."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tokenizer_fields(src_gguf: Path) -> list[tuple[str, Any, Any, Any]]:
    """(key, value, type, sub-type) of the embedded GGUF's tokenizer metadata."""
    import gguf

    reader = gguf.GGUFReader(src_gguf)
    out = []
    for key, f in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        main = f.types[0]
        sub = f.types[-1] if main == gguf.GGUFValueType.ARRAY else None
        out.append((key, f.contents(), main, sub))
    return out


def _load_state(model_dir: Path) -> dict[str, Any]:
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no *.safetensors (save the merged policy with save_pretrained)")
    state = {}
    for f in files:
        with safe_open(f, framework="pt") as st:
            for k in st.keys():
                state[k] = st.get_tensor(k)
    return state


def write_gguf(
    model_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    dtype: str = "f32",
    tokenizer_gguf: str | os.PathLike | None = None,
) -> Path:
    """Write the Llama-architecture model in ``model_dir`` (config.json + safetensors) as GGUF at ``out_path``.

    ``dtype``: "f32" (exact, default), "f16" or "q8_0" for the 2-D weights (norms stay f32, as llama.cpp's
    converter does).  The tokenizer metadata comes from ``tokenizer_gguf`` (default: the embedded model's GGUF), whose
    vocabulary must match the model's embedding rows.  Written atomically (temp file renamed into place).
    """
    import gguf
    import numpy as np
    import torch

    from ..artifacts import atomic_path
    from ..models import embedded_gguf

    model_dir, out_path = Path(model_dir), Path(out_path)
    if dtype not in ("f32", "f16", "q8_0"):
        raise ValueError(f"dtype must be 'f32', 'f16' or 'q8_0', got {dtype!r}")
    cfg = json.loads((model_dir / "config.json").read_text())
    archs = cfg.get("architectures") or []
    if cfg.get("model_type") != "llama" and "LlamaForCausalLM" not in archs:
        raise ValueError(
            f"{model_dir}: only the Llama architecture is written as GGUF (got {cfg.get('model_type')!r}); "
            "serve other models with vLLM (serve.server: vllm, or serve.url)"
        )
    tok_fields = _tokenizer_fields(Path(tokenizer_gguf) if tokenizer_gguf else embedded_gguf())
    n_vocab_tok = next(len(v) for k, v, _t, _s in tok_fields if k == "tokenizer.ggml.tokens")
    n_head, n_kv = int(cfg["num_attention_heads"]), int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    head_dim = int(cfg.get("head_dim") or hidden // n_head)
    if cfg.get("rope_scaling"):
        raise ValueError(f"{model_dir}: rope_scaling {cfg['rope_scaling']!r} is not written (SmolLM2 has none)")

    state = _load_state(model_dir)
    state = {k.removeprefix("model."): v for k, v in state.items()}
    emb = state["embed_tokens.weight"]
    if emb.shape[0] != n_vocab_tok:
        raise ValueError(f"{model_dir}: {emb.shape[0]} embedding rows but the tokenizer GGUF has {n_vocab_tok} tokens")
    rope_theta = cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta") or 10000.0

    with atomic_path(out_path) as tmp:
        w = gguf.GGUFWriter(tmp, "llama")
        w.add_name(cfg.get("_name_or_path") or model_dir.name)
        Q8_0 = gguf.GGMLQuantizationType.Q8_0
        file_types = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0"}
        w.add_file_type(getattr(gguf.LlamaFileType, file_types[dtype]))
        w.add_context_length(int(cfg.get("max_position_embeddings", 2048)))
        w.add_embedding_length(hidden)
        w.add_block_count(int(cfg["num_hidden_layers"]))
        w.add_feed_forward_length(int(cfg["intermediate_size"]))
        w.add_head_count(n_head)
        w.add_head_count_kv(n_kv)
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_rope_dimension_count(head_dim)
        w.add_rope_freq_base(float(rope_theta))
        w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-5)))
        w.add_vocab_size(int(emb.shape[0]))
        for key, val, vtype, sub in tok_fields:
            w.add_key_value(key, val, vtype, sub_type=sub)

        def put(name: str, t) -> None:
            a = np.ascontiguousarray(t.detach().to(torch.float32).numpy())
            if a.ndim == 2 and dtype == "f16":
                a = a.astype(np.float16)
            elif a.ndim == 2 and dtype == "q8_0":
                # blocks of 32 weights with one f16 scale, llama.cpp's reference quantiser (gguf-py)
                w.add_tensor(name, gguf.quants.quantize(a, Q8_0), raw_dtype=Q8_0)
                return
            w.add_tensor(name, a)

        put("token_embd.weight", emb)
        put("output_norm.weight", state["norm.weight"])
        if not cfg.get("tie_word_embeddings", False):
            head = state.get("lm_head.weight")
            if head is None:
                raise ValueError(f"{model_dir}: untied embeddings but no lm_head.weight")
            put("output.weight", head)
        for i in range(int(cfg["num_hidden_layers"])):
            for hf_name, gg_name in _LAYER.items():
                t = state[f"layers.{i}.{hf_name}"]
                if hf_name == "self_attn.q_proj.weight":
                    t = _permute_rotary(t, n_head)
                elif hf_name == "self_attn.k_proj.weight":
                    t = _permute_rotary(t, n_kv)
                put(f"blk.{i}.{gg_name}", t)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return out_path


def gguf_for(model_dir: str | os.PathLike, dtype: str = "f32", cache_dir: str | os.PathLike | None = None) -> Path:
    """The GGUF of a model folder, written once per content: ``<cache>/<sha256 of the folder>-<dtype>.gguf``.

    Embedded names (``smollm2-135m-instruct``) resolve to their converted folder first.  The key is the
    folder's content hash (every file), so a retrained policy saved under the same path gets a new file.
    """
    from ..artifacts import sha256_tree
    from ..models import itool_home, resolve

    folder = Path(resolve(model_dir))
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: not a model folder (no config.json)")
    key = hashlib.sha256(f"{sha256_tree(folder)}:{GGUF_WRITER_VERSION}".encode()).hexdigest()[:24]
    out = Path(cache_dir) if cache_dir else itool_home() / "gguf"
    path = out / f"{key}-{dtype}.gguf"
    if not path.is_file():
        log.info("writing %s as GGUF (%s) → %s", folder, dtype, path)
        write_gguf(folder, path, dtype=dtype)
    return path


# ------------------------------------------------------------------------------------------------ binary


def _cpu_key() -> str:
    # GGML_NATIVE compiles for this CPU's instruction set: a binary built on an AVX-512 machine may not run
    # on an AVX2 one, so the cache folder is keyed by the CPU flags.
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return hashlib.sha256(f"{platform.machine()}:{flags}".encode()).hexdigest()[:10]


def llama_dir() -> Path:
    """Where built servers live (outside the clone, shared by clones like pip's wheel cache)."""
    return Path(os.environ.get("ITOOL_LLAMA_DIR", Path.home() / ".cache" / "itool" / "llama-server")).expanduser()


def _build_dir() -> Path:
    return llama_dir() / f"llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}-{_cpu_key()}"


def llama_server_binary(required: bool = True) -> Path | None:
    """``$ITOOL_LLAMA_SERVER``, else the cached build, else ``llama-server`` on PATH."""
    env = os.environ.get("ITOOL_LLAMA_SERVER")
    candidates = [Path(env)] if env else []
    candidates.append(_build_dir() / "bin" / "llama-server")
    which = shutil.which("llama-server")
    if which:
        candidates.append(Path(which))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    if required:
        raise FileNotFoundError(
            "llama-server not found: run `make install` (builds it once, ~15 min on 2 cores, cached in "
            f"{_build_dir()}), or set ITOOL_LLAMA_SERVER to a llama-server binary, or give the engine a server "
            "URL (serve.url / --engine-url / ITOOL_ENGINE_URL)"
        )
    return None


def build_llama_server(jobs: int | None = None, force: bool = False) -> Path:
    """Compile ``llama-server`` from the ``llama-cpp-python`` sdist's vendored llama.cpp, once per version/CPU.

    The sdist comes from PyPI through pip (``pip download --no-binary``; pip's HTTP cache keeps it); cmake and a
    C++ compiler must exist (they do on the project's machines; ``apt-get install cmake g++`` elsewhere).
    Static, CPU-only, no network at build time (no prebuilt web UI, no curl / OpenSSL).
    """
    out = _build_dir()
    binary = out / "bin" / "llama-server"
    if binary.is_file() and not force:
        return binary
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"building llama-server needs {tool} (apt-get install cmake g++)")
    jobs = jobs or os.cpu_count() or 2
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llama-build.", dir=out.parent) as work:
        work_p = Path(work)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}",
                "-d",
                str(work_p),
            ],
            check=True,
        )
        sdist = next(work_p.glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tf:
            members = [m for m in tf.getmembers() if "/vendor/llama.cpp/" in m.name]
            tf.extractall(work_p, members=members, filter="data")
        src = next(work_p.glob("llama_cpp_python-*/vendor/llama.cpp"))
        build = work_p / "build"
        gen = ["-G", "Ninja"] if shutil.which("ninja") else []
        subprocess.run(
            [
                "cmake",
                "-S",
                str(src),
                "-B",
                str(build),
                *gen,
                "-DCMAKE_BUILD_TYPE=Release",
                "-DBUILD_SHARED_LIBS=OFF",
                "-DLLAMA_BUILD_TESTS=OFF",
                "-DLLAMA_BUILD_EXAMPLES=OFF",
                "-DLLAMA_BUILD_SERVER=ON",
                "-DLLAMA_BUILD_APP=OFF",
                "-DLLAMA_BUILD_UI=OFF",
                "-DLLAMA_USE_PREBUILT_UI=OFF",
                "-DLLAMA_OPENSSL=OFF",
                "-DLLAMA_CURL=OFF",
                "-DGGML_NATIVE=ON",
            ],
            check=True,
        )
        subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "-j", str(jobs)], check=True)
        staged = work_p / "stage"
        (staged / "bin").mkdir(parents=True)
        shutil.copy2(build / "bin" / "llama-server", staged / "bin" / "llama-server")
        (staged / "BUILD.json").write_text(
            json.dumps(
                {
                    "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION,
                    "cpu_key": _cpu_key(),
                    "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
                }
            )
        )
        if out.exists():
            shutil.rmtree(out)
        os.replace(staged, out)  # the folder appears under its final name only when complete
    return binary


# ------------------------------------------------------------------------------------------------ process


def _die_with_parent() -> None:
    # runs in the child between fork and exec: PR_SET_PDEATHSIG (1) = SIGTERM when the thread that started the
    # server ends (Linux ties it to the thread; a stage starts and stops its server in one thread, and a killed
    # process ends all of them).  Best effort: without it stop() and the engine's finalizer still apply.
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A local server process: started by :meth:`start`, ready when ``health_path`` answers 200, stopped by
    :meth:`stop` (SIGTERM to its process group, SIGKILL after ``stop_timeout``).  A context manager."""

    health_path = "/health"

    def __init__(
        self,
        argv: Sequence[str],
        host: str,
        port: int,
        log_path: str | os.PathLike | None = None,
        startup_timeout: float = 120.0,
        stop_timeout: float = 10.0,
        env: dict[str, str] | None = None,
    ):
        self.argv, self.host, self.port = list(argv), host, port
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="itool-server.", suffix=".log")[1])
        self.startup_timeout, self.stop_timeout, self.env = startup_timeout, stop_timeout, env
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def start(self) -> ServerProcess:
        import httpx

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as logf:
            # own process group: stop() signals the server and anything it spawned, and a Ctrl-C of the
            # pipeline reaches the pipeline first (which then stops the server in its finally/exit).  A pipeline
            # killed outright (SIGKILL, a SIGTERM that skips finally blocks) runs no cleanup: on Linux the kernel
            # then sends the server SIGTERM (parent-death signal), so no server outlives its owner.
            self.proc = subprocess.Popen(
                self.argv,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=None if self.env is None else {**os.environ, **self.env},
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.argv[0]} exited with {self.proc.returncode} while starting; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(self.base_url + self.health_path, timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass  # not listening yet / still loading
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"{self.argv[0]} not healthy after {self.startup_timeout:.0f} s; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.2)
        log.info("server ready at %s (pid %d, log %s)", self.base_url, self.proc.pid, self.log_path)
        return self

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(self.stop_timeout)
        except ProcessLookupError:
            pass

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LlamaServer(ServerProcess):
    """``llama-server`` on a GGUF file: ``slots`` parallel sequences with continuous batching.

    ``ctx_per_slot`` tokens of context per slot (the KV cache is unified across slots, so a long prompt can use
    more while others are short).  K/V in f32 by default (``cache_type``): llama.cpp's default f16 K/V would
    round what the transformers engine keeps in fp32, and greedy ids would then differ on near-ties.
    """

    def __init__(
        self,
        gguf_path: str | os.PathLike,
        *,
        slots: int = 8,
        ctx_per_slot: int = 2048,
        threads: int | None = None,
        cache_type: str = "f32",
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: str | os.PathLike | None = None,
        alias: str = "policy",
        extra_args: Sequence[str] = (),
        log_path: str | os.PathLike | None = None,
        startup_timeout: float = 120.0,
    ):
        self.gguf_path, self.slots, self.alias = Path(gguf_path), int(slots), alias
        port = port or free_port(host)
        threads = threads or min(os.cpu_count() or 2, 8)
        argv = [
            str(binary or llama_server_binary()),
            "-m",
            str(self.gguf_path),
            "--host",
            host,
            "--port",
            str(port),
            "-a",
            alias,
            "-np",
            str(self.slots),
            "-c",
            str(self.slots * int(ctx_per_slot)),
            "-t",
            str(threads),
            "-tb",
            str(threads),
            "-ctk",
            cache_type,
            "-ctv",
            cache_type,
            "-kvu",
            "--no-webui",
            *extra_args,
        ]
        # Passive OpenMP waits: with active spinning, a server whose threads share cores with other processes
        # (training, a test run) decoded 0.55 tok/s instead of 13 (measured here, 2 cores, -t 2).
        super().__init__(
            argv,
            host,
            port,
            log_path=log_path,
            startup_timeout=startup_timeout,
            env={"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")},
        )
