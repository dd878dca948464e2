"""The served engine: the engine protocol over an OpenAI-compatible completions server (vLLM on GPU, llama.cpp on CPU).

One client for the two servers a user runs: vLLM's OpenAI-compatible server (GPU, the paper profile, the
docker-compose ``vllm`` services; on CPU from vLLM's own environment) and llama.cpp's native ``llama-server``
(CPU); both are started by :mod:`itool_core.engines.serve`.  The search, the evaluation and the
self-evaluation see it through the same three calls as the in-process engines (:mod:`itool_core.engines.base`)
and it passes the same contract suite (``tests/test_engine_contract.py``, against a real llama-server and a
real vLLM server in the default run).

Wire format, per server (detected from ``GET /v1/models`` → ``owned_by``; or pass ``server_kind``):

* **vLLM** — ``POST /v1/completions`` with token-id prompts, ``n`` (greedy: 1, copied ``n`` times — vLLM 0.32
  rejects ``n > 1`` with greedy sampling), ``seed`` (+ prompt index), ``stop``,
  ``include_stop_str_in_output``, ``logprobs=1`` and ``return_tokens_as_token_ids`` (token ids come back as
  ``"token_id:123"``, so no re-tokenisation).  ``score`` uses vLLM's ``prompt_logprobs``; ``next_token_logprobs``
  the top ``top_logprobs`` of one greedy token, and ``prompt_logprobs`` for a candidate outside them.
* **llama.cpp** — ``POST /completion``, the same server's native completions endpoint (same parameters plus
  llama.cpp's ``return_tokens``/``n_probs``/``logit_bias``): its ``/v1/completions`` returns no generated
  token ids (``"verbose"`` carries them for the first of ``n`` choices only) and no stop string.  llama.cpp
  returns no prompt log-probs (no ``echo``), so a log-prob of a GIVEN token is read by *forced decoding*: one
  greedy token with that token forced by a logit bias, with ``n_probs``; llama.cpp computes the reported
  probabilities from the raw logits, before any sampler or bias, so this is the exact ``log p(token |
  prefix)``.  That gives ``score`` (one request per continuation token), the candidates of
  ``next_token_logprobs`` outside the top ``top_logprobs``, and the log-probs llama.cpp leaves out of a
  completion (the tokens that completed a stop string, tokens ending inside a UTF-8 character; the ids are
  complete).  Sampling: only ``temperature`` then ``top_p`` (the transformers order) — llama.cpp's default
  top-k 40 / min-p 0.05 / repetition penalty are switched off — and ``n`` completions share one prompt
  prefill (llama.cpp copies the prompt's KV to ``n`` slots; child j gets seed ``seed + j``).
* **other OpenAI-compatible servers** are treated like vLLM; ``score_fallback`` (an engine on the same
  weights, e.g. the transformers engine on the model folder) then answers ``score``.

Seeds: prompt i of a call is sent with seed ``seed + i·n`` (llama.cpp: its samples get ``seed + i·n + j``) or ``seed
+ i`` (vLLM, which seeds one generator per request), so a prompt's samples do not depend on how requests are
scheduled — up to the server's numerics: llama.cpp's CPU kernels sum in an order that depends on the batch its slots
form at that moment, so a sampled token at a near-tie can differ between two identical calls (bit-exact replay is
not a llama.cpp guarantee; the contract suite allows it there).  Log-probs are the raw distribution's (temperature
1), as the protocol asks.

Transport (``httpx``): one request per prompt, at most ``concurrency`` in flight (the server's parallel
slots: more would only queue there), ``timeout`` seconds per request.  Transient failures — connection
refused or reset (a server still starting), 5xx, 408/429, timeouts — are retried ``retries`` times with
exponential backoff (``backoff`` · 2^attempt, at most ``max_backoff`` s); other 4xx fail at once with
:class:`ServerError` carrying the server's message.  Requests are idempotent (seeded), so a retry is safe.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .base import (
    Completion,
    GenerationParams,
    apply_stop,
    candidate_token_ids,
    encode_prompt,
    encode_prompts,
    replicate_greedy,
    score_pairs,
)

log = logging.getLogger(__name__)

__all__ = ["OpenAIEngine", "ServerError", "ServerUnavailable"]


class ServerError(RuntimeError):
    """The server rejected a request (4xx): a permanent error, not retried."""

    def __init__(self, status: int, message: str, url: str):
        super().__init__(f"{url} answered HTTP {status}: {message}")
        self.status, self.message, self.url = status, message, url


class ServerUnavailable(ConnectionError):
    """The server did not answer usefully after all retries (down, still starting, 5xx, timeouts)."""


def _error_message(r) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:500]
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err)


def _token_id(tok: str) -> int:
    # vLLM with return_tokens_as_token_ids: "token_id:123"
    return int(tok.rsplit(":", 1)[1])


def _forcing_grammar(ids: Sequence[int]) -> str:
    return "root ::= " + " ".join(f"<[{int(t)}]>" for t in ids)


class OpenAIEngine:
    """Engine protocol over an OpenAI-compatible completions server at ``base_url``."""

    kind = "openai"

    @classmethod
    def build(
        cls,
        model: Any,
        *,
        tokenizer: Any = None,
        adapter: str | os.PathLike | None = None,
        batch_size: int = 8,
        num_threads: int | None = None,
        reuse_prefixes: bool = False,
        progress: bool | None = False,
        serve: Any = None,
        log_dir: str | os.PathLike | None = None,
    ) -> OpenAIEngine:
        """The pipeline's options (engines.__init__): start a server for the model folder, or connect to
        ``serve.url`` (:func:`.serve.start_served_engine`); ``close()`` stops a started server.  The server
        batches (``serve.slots``) and caches prompts itself, so ``batch_size`` / ``reuse_prefixes`` / ``progress``
        have nothing to set; ``num_threads`` = llama.cpp's CPU threads."""
        from .serve import start_served_engine

        return start_served_engine(
            model, serve, tokenizer=tokenizer, adapter=adapter, threads=num_threads, log_dir=log_dir
        )

    def __init__(
        self,
        model: str | None = None,
        tokenizer: Any = None,
        *,
        base_url: str,
        server_kind: str | None = None,
        concurrency: int = 8,
        timeout: float = 300.0,
        connect_timeout: float = 5.0,
        retries: int = 8,
        backoff: float = 0.25,
        max_backoff: float = 8.0,
        top_logprobs: int = 20,
        api_key: str | None = None,
        score_fallback: Any = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        """``base_url``: the server (``http://host:port``, with or without ``/v1``).  ``model``: the served model
        name (default: the first of ``/v1/models``).  ``tokenizer``: a transformers tokenizer or a model
        folder/name to load one from (the server's own vocabulary; prompts are tokenised here, without special
        tokens, and sent as ids).  ``score_fallback``: an engine, or a callable returning one, that answers
        ``score`` where the server cannot.  ``on_close``: called by :meth:`close` (stops a server this engine
        owns)."""
        import httpx

        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            from ..models import DEFAULT_MODEL, load_tokenizer

            tokenizer = load_tokenizer(tokenizer or DEFAULT_MODEL)
        self.tokenizer = tokenizer
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.concurrency = max(1, int(concurrency))
        self.retries, self.backoff, self.max_backoff = int(retries), float(backoff), float(max_backoff)
        self.top_logprobs = max(1, int(top_logprobs))
        self.timeout = float(timeout)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            headers=headers,
            limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
        )
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="openai-engine")
        self._score_fallback = score_fallback
        self._on_close = on_close
        self.server: Any = None  # the server process this engine started and stops on close (serve.py), if any
        self._closed = False
        self._lock = threading.Lock()
        self._tls = threading.local()  # the llama.cpp slot a worker's current prompt group is pinned to
        self.requests = 0  # HTTP requests sent (retries included): what the benchmark reports
        self.model, self.server_kind = model, server_kind
        if self.model is None or self.server_kind is None:
            info = self._request("GET", "/v1/models")
            data = info.get("data") or [{}]
            self.model = self.model or data[0].get("id")
            owner = str(data[0].get("owned_by", "")).lower()
            self.server_kind = self.server_kind or (
                "llama.cpp" if "llama" in owner else "vllm" if "vllm" in owner else "openai"
            )
        if self.server_kind not in ("llama.cpp", "vllm", "openai"):
            raise ValueError(f"server_kind must be 'llama.cpp', 'vllm' or 'openai', got {self.server_kind!r}")
        eos = self.tokenizer.eos_token_id
        self.eos_ids = {int(eos)} if eos is not None else set()
        self.special_ids = {int(i) for i in getattr(self.tokenizer, "all_special_ids", []) or []}
        self._ascii_token = int(self.tokenizer("a", add_special_tokens=False)["input_ids"][0])

    # --------------------------------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Close the connections and stop the server this engine started (if any).  Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._pool.shutdown(wait=True)
        self.client.close()
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> OpenAIEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --------------------------------------------------------------------------------------------- transport

    def _request(self, method: str, path: str, body: dict | None = None) -> Any:
        import httpx

        url = self.base_url + path
        last: str = ""
        t0 = time.monotonic()
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
            self.requests += 1
            try:
                r = self.client.request(method, url, json=body)
            except httpx.TimeoutException as e:
                last = f"timed out after {self.timeout:.0f} s ({type(e).__name__})"
                continue
            except httpx.TransportError as e:  # refused while starting, reset, closed mid-response
                last = f"{type(e).__name__}: {e}"
                continue
            if r.status_code < 400:
                return r.json()
            if r.status_code in (408, 429) or r.status_code >= 500:  # overloaded / loading / crashed: retry
                last = f"HTTP {r.status_code}: {_error_message(r)}"
                continue
            raise ServerError(r.status_code, _error_message(r), url)
        raise ServerUnavailable(
            f"{url}: no answer after {self.retries + 1} attempts in {time.monotonic() - t0:.1f} s; last error: {last}"
        )

    def _llama_post(self, body: dict) -> Any:
        """``POST /completion``, pinned to the slot of the worker's prompt group once it has one (see
        :meth:`_grouped_map`), so the group's shared prefix stays in that slot's KV cache."""
        slot = getattr(self._tls, "slot", None)
        if slot is not None and slot >= 0:
            body = {**body, "id_slot": slot}
        out = self._request("POST", "/completion", body)
        first = out[0] if isinstance(out, list) and out else out
        if slot is not None and isinstance(first, dict) and "id_slot" in first:
            self._tls.slot = int(first["id_slot"])
        return out

    def _grouped_map(self, fn: Callable[[int, list[int]], Any], encoded: list[list[int]]) -> list[Any]:
        """``fn(i, ids)`` for every prompt; on llama.cpp, prompts sharing a long prefix run one after another on
        one slot.

        llama.cpp reuses a prompt prefix only within the slot that computed it: k sibling prompts sent at once
        land on k slots and each prefills the shared ~400–700 tokens again (measured here: 6 parallel requests
        with a cached 400-token prefix took 17 s, 4 of them re-prefilling it; one after another on the slot they
        only evaluate their suffix).  So groups (sorted ids; ≥ 32 common tokens and ≥ 80 % of the shorter
        prompt: siblings of one node, self-evaluations of one tree) go to one worker each and are pinned to the
        slot their first request used, while different groups (trees) still decode in parallel.
        """
        if self.server_kind != "llama.cpp" or len(encoded) <= 1:
            return self._map(lambda a: fn(a[0], a[1]), list(enumerate(encoded)))
        groups = _prefix_groups(encoded)

        def run(members: list[int]) -> list[tuple[int, Any]]:
            self._tls.slot = -1
            try:
                return [(i, fn(i, encoded[i])) for i in members]
            finally:
                self._tls.slot = None

        results: list[Any] = [None] * len(encoded)
        for part in self._map(run, groups):
            for i, r in part:
                results[i] = r
        return results

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        if self._closed:
            raise RuntimeError("the engine is closed")
        if len(items) <= 1:
            return [fn(x) for x in items]
        return list(self._pool.map(fn, items))

    # --------------------------------------------------------------------------------------------- helpers

    def encode(self, text: str | Sequence[int]) -> list[int]:
        return encode_prompt(self.tokenizer, text)

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _llama_body(self, ids: list[int], **kw: Any) -> dict:
        # only temperature then top_p (transformers' order); llama.cpp's other samplers and penalties off
        body = {
            "prompt": ids,
            "cache_prompt": True,
            "return_tokens": True,
            "samplers": ["temperature", "top_p"],
            "top_k": 0,
            "min_p": 0.0,
            "typical_p": 1.0,
            "repeat_penalty": 1.0,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "dry_multiplier": 0.0,
            "xtc_probability": 0.0,
            "n_probs": 1,
        }
        body.update(kw)
        return body

    def _forced_logprob(self, prefix: list[int], token: int) -> float:
        """Exact log p(token | prefix) on llama.cpp: one greedy token with ``token`` forced by a logit bias.

        llama.cpp reports the probabilities of the RAW logits (``n_probs``; samplers and biases act on a copy),
        so the bias picks the token without changing its reported log-prob.  A token that ends inside a UTF-8
        character gets no probability entry (llama.cpp records probabilities with text): then the whole
        next-token distribution is asked for (``n_probs`` = vocabulary; rare: byte-fallback tokens only), with a
        plain ASCII token forced so that the entry exists.
        """
        token = int(token)
        body = self._llama_body(prefix, n_predict=1, temperature=0.0, logit_bias=[[token, 1e9]])
        probs = self._llama_post(body).get("completion_probabilities") or []
        if probs and int(probs[0].get("id", -1)) == token:
            return float(probs[0]["logprob"])
        # the whole distribution, read off a forced plain-ASCII token (whose entry llama.cpp always records;
        # the unforced greedy token may itself end inside a character and come back without one)
        body.update(logit_bias=[[self._ascii_token, 1e9]], n_probs=len(self.tokenizer))
        probs = self._llama_post(body).get("completion_probabilities") or [{}]
        for e in probs[0].get("top_logprobs") or []:
            if int(e["id"]) == token:
                return float(e["logprob"])
        raise RuntimeError(f"llama.cpp returned no log-prob for token {token} after {len(prefix)} prompt tokens")

    def _forced_logprobs(self, prefix: list[int], forced: Sequence[int]) -> list[float]:
        forced = [int(t) for t in forced]
        return [self._forced_logprob(prefix + forced[:k], t) for k, t in enumerate(forced)]

    def _aligned_logprobs(self, prompt: list[int], gen: list[int], probs: list[dict]) -> list[float]:
        """One log-prob per generated id.  llama.cpp leaves some out — the tokens that spelled a stop string
        (at the end) and tokens ending inside a UTF-8 character (anywhere) — so its entries (which carry their
        token id) are matched to the ids in order, and every id left without one is forced."""
        out: list[float | None] = [None] * len(gen)
        j = 0
        for i, t in enumerate(gen):
            if j < len(probs) and int(probs[j].get("id", -1)) == t:
                out[i] = float(probs[j]["logprob"])
                j += 1
        return [v if v is not None else self._forced_logprob(prompt + gen[:i], gen[i]) for i, v in enumerate(out)]

    # --------------------------------------------------------------------------------------------- protocol

    def generate(
        self, prompts: Sequence[str | Sequence[int]], params: GenerationParams = GenerationParams()
    ) -> list[list[Completion]]:
        encoded = encode_prompts(self.tokenizer, prompts)
        one = self._generate_llama if self.server_kind == "llama.cpp" else self._generate_openai
        return self._grouped_map(lambda i, ids: one(ids, params, i), encoded)

    def _seed(self, params: GenerationParams, index: int, per_prompt: int) -> int | None:
        if params.seed is None or params.greedy:
            return None
        return (int(params.seed) + index * per_prompt) % (2**31 - 1)

    def _finish(
        self,
        ids: list[int],
        lps: list[float],
        finish: str,
        params: GenerationParams,
        server_text: str | None,
        server_stop: str | None,
    ) -> Completion:
        # The end-of-sequence token is not part of a completion (protocol); text is the decode of the ids cut at
        # the earliest stop string, exactly as the transformers engine computes it.
        if (
            ids
            and finish == "stop"
            and server_stop is None
            and (ids[-1] in self.eos_ids or ids[-1] in self.special_ids)
        ):
            ids, lps = ids[:-1], lps[:-1]
        text, stop_reason, _ = apply_stop(self._decode(ids), params.stop, params.include_stop_str_in_output)
        if stop_reason is None and server_stop:  # the server matched a stop the local decode does not show
            stop_reason = server_stop
            text = (server_text or "") + (server_stop if params.include_stop_str_in_output else "")
        return Completion(
            text=text,
            token_ids=ids,
            logprobs=lps,
            finish_reason="stop" if stop_reason is not None or finish == "stop" else "length",
            stop_reason=stop_reason,
        )

    def _generate_llama(self, ids: list[int], params: GenerationParams, index: int) -> list[Completion]:
        comps: list[Completion] = []
        # n completions share the prompt's prefill; n > slots is sent in chunks (a request needs n free slots)
        chunk = max(1, min(params.n, self.concurrency))
        for start in range(0, params.n, chunk):
            n = min(chunk, params.n - start)
            seed = self._seed(params, index, params.n)
            body = self._llama_body(
                ids,
                n_predict=params.max_new_tokens,
                temperature=float(params.temperature),
                top_p=float(params.top_p) if not params.greedy else 1.0,
                n_cmpl=n,
                stop=list(params.stop),
                seed=-1 if seed is None else (seed + start) % (2**31 - 1),
            )
            out = self._llama_post(body)
            results = out if isinstance(out, list) else [out]
            results = sorted(results, key=lambda r: r.get("index", 0))
            for r in results:
                gen = [int(t) for t in r.get("tokens") or []]
                lps = self._aligned_logprobs(ids, gen, r.get("completion_probabilities") or [])
                stop_type = r.get("stop_type")
                server_stop = (r.get("stopping_word") or None) if stop_type == "word" else None
                finish = "stop" if stop_type in ("eos", "word") else "length"
                comps.append(self._finish(gen, lps, finish, params, r.get("content"), server_stop))
        return comps

    def _openai_body(self, ids: list[int], **kw: Any) -> dict:
        body = {"model": self.model, "prompt": ids, "return_tokens_as_token_ids": True, "skip_special_tokens": True}
        body.update(kw)
        return body

    def _generate_openai(self, ids: list[int], params: GenerationParams, index: int) -> list[Completion]:
        if params.greedy and params.n > 1:
            # vLLM 0.32 answers HTTP 400 "n must be 1 when using greedy sampling"; n greedy samples are one
            # completion repeated: ask for one, copy it
            (one,) = self._generate_openai(ids, params.with_(n=1), index)
            return replicate_greedy(one, params.n)
        body = self._openai_body(
            ids,
            max_tokens=params.max_new_tokens,
            temperature=float(params.temperature),
            top_p=float(params.top_p) if not params.greedy else 1.0,
            n=params.n,
            logprobs=1,
            include_stop_str_in_output=params.include_stop_str_in_output,
        )
        if params.stop:
            body["stop"] = list(params.stop)
        seed = self._seed(params, index, 1)
        if seed is not None:
            body["seed"] = seed
        out = self._request("POST", "/v1/completions", body)
        comps = []
        for ch in sorted(out["choices"], key=lambda c: c.get("index", 0)):
            lp = ch.get("logprobs") or {}
            ids_out = [_token_id(t) for t in lp.get("tokens") or []]
            lps = [float("nan") if v is None else float(v) for v in lp.get("token_logprobs") or []]
            stop = ch.get("stop_reason") if isinstance(ch.get("stop_reason"), str) else None
            comps.append(
                self._finish(
                    ids_out,
                    lps,
                    "length" if ch.get("finish_reason") == "length" else "stop",
                    params,
                    ch.get("text"),
                    stop,
                )
            )
        return comps

    def score(self, prompts: Sequence[str], continuations: Sequence[str | Sequence[int]]) -> list[list[float]]:
        if self.server_kind == "openai":
            if self._score_fallback is None:
                raise NotImplementedError(
                    "this server returns no prompt log-probs: give OpenAIEngine a score_fallback engine on the same "
                    "weights (e.g. make_engine('hf', model=<model folder>))"
                )
            if callable(self._score_fallback) and not hasattr(self._score_fallback, "score"):
                self._score_fallback = self._score_fallback()
            return self._score_fallback.score(prompts, continuations)
        pairs = score_pairs(self.tokenizer, self.encode, prompts, continuations)
        if self.server_kind == "llama.cpp":
            return self._grouped_map(lambda i, _ids: self._forced_logprobs(*pairs[i]), [p + c for p, c in pairs])
        return self._map(lambda pc: self._prompt_logprobs(*pc), pairs)

    def _prompt_logprobs(self, prompt: list[int], cont: list[int]) -> list[float]:
        if not cont:
            return []
        out = self._request(
            "POST",
            "/v1/completions",
            self._openai_body(prompt + cont, max_tokens=1, temperature=0.0, prompt_logprobs=1),
        )
        plp = out["choices"][0].get("prompt_logprobs") or out.get("prompt_logprobs") or []
        vals = []
        for k, t in enumerate(cont):
            step = plp[len(prompt) + k] if len(prompt) + k < len(plp) else None
            entry = (step or {}).get(str(t))
            vals.append(
                float("nan") if entry is None else float(entry["logprob"] if isinstance(entry, dict) else entry)
            )
        return vals

    def next_token_logprobs(self, prompts: Sequence[str], candidate_tokens: Sequence[str]) -> list[dict[str, float]]:
        cand = candidate_token_ids(self.tokenizer, candidate_tokens)
        encoded = [self.encode(p) for p in prompts]

        def one(ids: list[int]) -> dict[str, float]:
            if self.server_kind == "llama.cpp":
                out = self._llama_post(self._llama_body(ids, n_predict=1, temperature=0.0, n_probs=self.top_logprobs))
                probs = out.get("completion_probabilities") or [{}]
                top = {int(e["id"]): float(e["logprob"]) for e in probs[0].get("top_logprobs") or []}
            else:
                out = self._request(
                    "POST",
                    "/v1/completions",
                    self._openai_body(ids, max_tokens=1, temperature=0.0, logprobs=self.top_logprobs),
                )
                tops = (out["choices"][0].get("logprobs") or {}).get("top_logprobs") or [{}]
                top = {_token_id(k): float(v) for k, v in (tops[0] or {}).items()}
            d = {}
            for c, t in zip(candidate_tokens, cand):
                if t in top:
                    d[c] = top[t]
                elif self.server_kind == "llama.cpp":
                    d[c] = self._forced_logprob(ids, t)
                else:
                    (d[c],) = self._prompt_logprobs(ids, [t])
            return d

        res = self._grouped_map(lambda _i, ids: one(ids), encoded)
        return [{c: d[c] for c in candidate_tokens} for d in res]

    def __repr__(self) -> str:
        return f"OpenAIEngine({self.base_url!r}, server_kind={self.server_kind!r}, model={self.model!r})"


def _prefix_groups(encoded: list[list[int]], min_tokens: int = 32, min_share: float = 0.8) -> list[list[int]]:
    """Indices of prompts grouped by a long common prefix (sorted by ids; each compared with its group's first)."""

    def lcp(a: list[int], b: list[int]) -> int:
        n = min(len(a), len(b))
        k = 0
        while k < n and a[k] == b[k]:
            k += 1
        return k

    groups: list[list[int]] = []
    for i in sorted(range(len(encoded)), key=lambda i: encoded[i]):
        if groups:
            a, b = encoded[groups[-1][0]], encoded[i]
            c = lcp(a, b)
            if c >= min_tokens and c >= min_share * min(len(a), len(b)):
                groups[-1].append(i)
                continue
        groups.append([i])
    return groups
