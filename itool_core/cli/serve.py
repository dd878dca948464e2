"""``itool serve build|gguf|which|start``: the served engine's servers (llama.cpp's ``llama-server``, vLLM).

``build`` compiles llama-server and installs vLLM's own Python environment, once each (``make install`` runs
this; both cached outside the clone: engines/llama_cpp.py, engines/vllm_env.py), ``gguf`` writes a policy
folder as GGUF, ``which`` prints the binary and the vLLM Python in use, ``start`` serves a policy on
127.0.0.1 with the run config's ``serve`` settings until Ctrl-C — the server a user points ``serve.url`` /
``--engine-url`` at, or inspects with curl.  The pipeline itself starts and stops its servers (engines/serve.py).
"""

from __future__ import annotations

import argparse
import signal
import time

from . import checks
from .common import add_config_options, resolve_config


def _cmd_build(args: argparse.Namespace) -> int:
    if args.server in ("all", "llama.cpp"):
        from ..engines.llama_cpp import build_llama_server

        t0 = time.perf_counter()
        path = build_llama_server(args.jobs, args.force)
        print(f"{path} ({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.server in ("all", "vllm"):
        from ..engines.vllm_env import build_vllm_env

        t0 = time.perf_counter()
        py = build_vllm_env(args.force)
        print(f"{py} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


def _cmd_gguf(args: argparse.Namespace) -> int:
    checks.local_model("model", args.model)
    from ..engines.llama_cpp import gguf_for

    print(gguf_for(args.model, args.dtype))
    return 0


def _cmd_which(args: argparse.Namespace) -> int:
    from ..engines.llama_cpp import llama_server_binary
    from ..engines.vllm_env import vllm_python

    try:
        print(f"llama.cpp: {llama_server_binary()}")
    except FileNotFoundError as e:
        print(f"llama.cpp: not built ({e})")
    print(f"vllm: {vllm_python() or 'not installed (itool serve build --server vllm)'}")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _cmd_start(args: argparse.Namespace) -> int:
    checks.local_model("model", args.model)
    checks.port("--port", args.port)
    from ..engines.serve import llama_server

    server = llama_server(args.model, resolve_config(args).serve, threads=args.threads, port=args.port)
    # SIGTERM (kill, timeout, a supervisor) ends the command like Ctrl-C, so the server is stopped on the way out
    signal.signal(signal.SIGTERM, _interrupt)
    with server:
        print(f"serving {args.model} at {server.base_url} (log {server.log_path}); Ctrl-C stops it", flush=True)
        try:
            while server.running:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="the served engine's CPU server: build it, write GGUF, serve a policy")
    s = p.add_subparsers(dest="serve_command", required=True)
    b = s.add_parser(
        "build",
        help="compile llama-server and install vLLM's own environment, once each (cached outside the clone); "
        "prints their paths",
    )
    b.add_argument(
        "--server", default="all", choices=("all", "llama.cpp", "vllm"), help="which server to build (default: both)"
    )
    b.add_argument("--jobs", type=int, default=None, help="compiler jobs (default: every core)")
    b.add_argument("--force", action="store_true", help="rebuild even if a cached binary exists")
    b.set_defaults(func=_cmd_build)
    g = s.add_parser("gguf", help="write a model folder as GGUF (cached by content); prints its path")
    g.add_argument("model", help="an embedded model name or a model folder")
    g.add_argument("--dtype", default="f32", choices=("f32", "f16", "q8_0"))
    g.set_defaults(func=_cmd_gguf)
    w = s.add_parser("which", help="print the llama-server binary and the Python that runs vLLM")
    w.set_defaults(func=_cmd_which)
    st = s.add_parser("start", help="serve a policy on 127.0.0.1 (the config's serve section) until Ctrl-C")
    st.add_argument("model", help="an embedded model name or a (merged) model folder")
    st.add_argument("--port", type=int, default=None, help="default: a free port")
    st.add_argument("--threads", type=int, default=None, help="CPU threads (default: every core, at most 8)")
    add_config_options(st)
    st.set_defaults(func=_cmd_start)
