"""Transformers generation backend (CPU-testable reference implementation of the engine protocol).

How it generates (docs/design.md#speed-facts):

* Prompts are tokenised once, sorted by length (longest first, so an out-of-memory shows up at once) and cut
  into batches; each batch is LEFT-padded, so the last position of every row is its real last prompt token
  and ``model.generate`` decodes all rows in lock-step with one KV cache.  Position ids come from the
  attention mask, so a padded row computes exactly what it would alone (the contract test checks
  batch == single for greedy).
* ``n > 1`` samples of one prompt: ``num_return_sequences`` would prefill the prompt ``n`` times.  Instead the
  prompt (all but its last token) is prefilled ONCE, the cache is repeated ``n`` times
  (``DynamicCache.batch_repeat_interleave``) and ``generate`` continues from it.  Measured here with
  SmolLM2-135M fp32, 2 threads, n = 8 samples of 32 tokens for three 374–472-token BFCL prompts: 15.6–16.4 s
  (47–49 tokens/s) against 32.7–42.6 s (18–23 tokens/s) when the prompt is repeated n times (what
  ``num_return_sequences`` does).  This is the primitive that expands the k children of a search node.
* ``share_prefixes=True`` (what the tree search uses): prompts of one call that share a long prefix — the k
  rollouts of one node's children, the self-evaluations of siblings — are grouped (sorted by their ids,
  adjacent prompts whose common prefix keeps ≥ 80 % of the group's prefix and ≥ 32 tokens).  Each group's
  prefix is prefilled ONCE for the whole batch (distinct prefixes left-padded together), the cache rows are
  repeated per member and sample (``Cache.reorder_cache``), and every row continues with its own suffix,
  left-padded after the prefix; the attention mask has zeros between prefix and suffix and positions follow
  the mask, so each row computes what it would alone (contract-tested: greedy outputs equal the plain path).
  On CPU, where prefill is compute-bound, this is what batching siblings together can save; one prompt per
  call (one call per child) can share nothing.
* ``prefix_cache_mb > 0`` (with ``share_prefixes``; what mining uses) keeps those prefilled prefixes ACROSS
  calls, as vLLM's automatic prefix caching does on GPU: an LRU store of unpadded K/V rows, bounded in MB.  A
  new group prefix reuses the longest common prefix with any stored row and prefills only the rest.  The
  tree search needs it because every round starts from what the last one computed: the leaves' prompts
  extend earlier prompts, the rollouts of new children extend the prompt their step was sampled from, and the
  next self-evaluations differ from the previous ones only after "Proposed partial answer"; without the
  store each round prefilled every tree's ~600-token prompt again.
* Per-token log-probs of the RAW distribution (before temperature / top-p) are recorded by a logits processor
  that keeps only the previous step's ``log_softmax`` (memory O(batch × vocab) rather than
  ``output_logits``' O(batch × steps × vocab)).
* Stop strings stop generation through transformers' ``StopStringCriteria`` (built once per stop set and
  cached: building it scans the vocabulary), then text and ids are cut as described in
  :mod:`itool_core.engines.base`.
* Sampling is seeded: ``torch.manual_seed(seed + batch index)`` inside a forked RNG, so a call with the same
  prompts, parameters and seed gives the same samples and leaves the global RNG untouched.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import torch

from .base import Completion, GenerationParams, apply_stop, encode_prompt, score_pairs
from .prefix_cache import PrefixKVStore

log = logging.getLogger(__name__)

#: Serialises seeded sampling across threads (see :meth:`HFEngine.generate`).
_SAMPLING_LOCK = threading.RLock()

__all__ = ["HFEngine"]


class _LogprobRecorder:
    """Logits processor that records log p(chosen token) under the raw distribution, step by step.

    At decoding step t the processor sees the input ids up to step t-1, whose last column is the token chosen
    at step t-1: its log-prob is read from the distribution kept at step t-1.  The last step's token is read
    in :meth:`finish`.  It must run before temperature/top-p (custom processors are merged before the warpers
    in transformers' ``_get_logits_processor``) and never changes the scores.
    """

    def __init__(self) -> None:
        self.prev: torch.Tensor | None = None
        self.out: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prev is not None:
            self.out.append(self.prev.gather(1, input_ids[:, -1:]).squeeze(1))
        self.prev = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, generated: torch.LongTensor) -> torch.Tensor:
        steps = generated.shape[1]
        if self.prev is not None and len(self.out) < steps:
            self.out.append(self.prev.gather(1, generated[:, len(self.out) : len(self.out) + 1]).squeeze(1))
        if not self.out:
            return torch.zeros(generated.shape[0], 0)
        return torch.stack(self.out[:steps], dim=1).cpu()


#: K/V the policy engine keeps across the search's calls (about 22k prompt tokens of SmolLM2-135M in fp32,
#: several rounds of a batch of 8 trees: tree prompts, leaf prompts and self-evaluation prompts).
POLICY_PREFIX_CACHE_MB = 1024


class HFEngine:
    """Engine protocol on a transformers causal LM (optionally a peft LoRA model)."""

    kind = "hf"

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
    ) -> HFEngine:
        """The pipeline's options (engines.__init__): ``reuse_prefixes`` = one prefill per shared prefix and
        prefixes kept across calls (the search revisits its prompts); the batch and thread knobs are this CPU's
        (``serve`` and ``log_dir`` are the served engine's)."""
        extra: dict[str, Any] = (
            dict(share_prefixes=True, prefix_cache_mb=POLICY_PREFIX_CACHE_MB) if reuse_prefixes else {}
        )
        return cls(
            model,
            tokenizer,
            adapter=adapter,
            batch_size=batch_size,
            num_threads=num_threads,
            progress=progress,
            **extra,
        )

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        *,
        adapter: str | os.PathLike | None = None,
        dtype: Any = None,
        device: str | None = None,
        batch_size: int = 8,
        num_threads: int | None = None,
        progress: bool | None = None,
        prefill_once: bool = True,
        max_prompt_tokens: int | None = None,
        static_cache: bool = True,
        max_batch_tokens: int | None = 8192,
        share_prefixes: bool = False,
        prefix_cache_mb: float = 0,
    ) -> None:
        """``model`` is a loaded model (then ``tokenizer`` is required) or a name/path for ``models.load_policy``.

        ``batch_size`` counts sequences (prompts × n) decoded together.  ``num_threads`` calls
        ``torch.set_num_threads`` (2 on the dev box: one thread is half as fast).  ``progress`` shows a tqdm
        bar (default: when a call has more than one batch).  ``max_prompt_tokens`` keeps only the last tokens
        of longer prompts (with a warning) instead of running past the model's context.  ``static_cache``
        preallocates the KV cache for single-sample generation (the prefill-once path for n > 1 keeps the
        dynamic cache, which it must repeat n times).  ``max_batch_tokens`` bounds prompts × padded length
        per batch (None: only ``batch_size`` counts).  ``share_prefixes`` prefills a prefix shared by several
        prompts of one call once (see the module docstring); ``prefix_cache_mb`` keeps those prefixes across
        calls (needs ``share_prefixes``; 0 = off).
        """
        if num_threads:
            torch.set_num_threads(int(num_threads))
        if model is None or isinstance(model, (str, os.PathLike)):
            from ..models import load_policy

            model, loaded_tok = load_policy(
                model if model is not None else "smollm2-135m-instruct",
                adapter=adapter,
                dtype=dtype,
                device=device or "cpu",
            )
            tokenizer = tokenizer or loaded_tok
        elif adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter))
        if tokenizer is None:
            raise ValueError("HFEngine(model=<loaded model>) needs tokenizer=")
        if device is not None:
            model.to(device)
        model.eval()
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        self.progress = progress
        self.prefill_once = prefill_once
        self.static_cache = static_cache
        self.max_batch_tokens = max_batch_tokens
        self.max_prompt_tokens = max_prompt_tokens
        self.share_prefixes = share_prefixes
        if prefix_cache_mb and not share_prefixes:
            raise ValueError("prefix_cache_mb needs share_prefixes=True (the store holds the shared prefixes)")
        self.prefix_store = PrefixKVStore(int(prefix_cache_mb * 2**20)) if prefix_cache_mb else None
        self.eos_ids = self._eos_ids()
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]
        self._stop_criteria: dict[tuple[str, ...], Any] = {}

    # ------------------------------------------------------------------------------------------------ helpers

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        cfg_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for v in (cfg_eos, self.tokenizer.eos_token_id):
            if v is None:
                continue
            for x in v if isinstance(v, (list, tuple)) else [v]:
                if int(x) not in ids:
                    ids.append(int(x))
        if not ids:
            raise ValueError("the tokenizer/model defines no end-of-sequence token")
        return ids

    def encode(self, text: str | Sequence[int]) -> list[int]:
        ids = encode_prompt(self.tokenizer, text)
        if self.max_prompt_tokens and len(ids) > self.max_prompt_tokens:
            log.warning("prompt of %d tokens cut to its last %d", len(ids), self.max_prompt_tokens)
            ids = ids[-self.max_prompt_tokens :]
        return list(ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _pad_left(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            if s:
                ids[r, width - len(s) :] = torch.tensor(list(s), dtype=torch.long)
                mask[r, width - len(s) :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        dev = self.device
        return ids.to(dev), mask.to(dev), pos.to(dev)

    def _batches(self, order: list[int], size: int, desc: str, lengths: Sequence[int] | None = None):
        """Chunks of ``order`` (longest first) of at most ``size`` rows and ``max_batch_tokens`` padded tokens.

        The token bound matters on CPU: prefill attention over B × L² positions made one batch of 16 prompts
        of 2.4k tokens run for over 15 minutes; a few long prompts per batch and many short ones is faster.
        """
        chunks: list[list[int]] = []
        for i in order:
            if chunks:
                cur = chunks[-1]
                width = max(lengths[cur[0]], lengths[i]) if lengths is not None else 0
                fits = len(cur) < size and (
                    lengths is None or not self.max_batch_tokens or (len(cur) + 1) * width <= self.max_batch_tokens
                )
                if fits:
                    cur.append(i)
                    continue
            chunks.append([i])
        return self._progress(chunks, desc)

    def _stopping(self, stop: tuple[str, ...]):
        if not stop:
            return None
        if stop not in self._stop_criteria:
            from transformers import StoppingCriteriaList
            from transformers.generation.stopping_criteria import StopStringCriteria

            self._stop_criteria[stop] = StoppingCriteriaList(
                [StopStringCriteria(tokenizer=self.tokenizer, stop_strings=list(stop))]
            )
        return self._stop_criteria[stop]

    def _gen_config(self, p: GenerationParams):
        from transformers import GenerationConfig

        kw: dict[str, Any] = dict(
            max_new_tokens=p.max_new_tokens,
            do_sample=not p.greedy,
            num_beams=1,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            return_dict_in_generate=True,
            use_cache=True,
            # Explicit neutral values: anything left unset is filled from the model's own generation_config
            # (e.g. top_k=50, a repetition penalty), which would change the distribution we sample from.
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
        )
        if not p.greedy:
            # top_k=0 switches off the top-50 filter transformers applies by default (vLLM has none).
            kw.update(temperature=float(p.temperature), top_p=float(p.top_p), top_k=0)
        return GenerationConfig(**kw)

    # ------------------------------------------------------------------------------------------------ generate

    @torch.inference_mode()
    def generate(
        self, prompts: Sequence[str | Sequence[int]], params: GenerationParams = GenerationParams()
    ) -> list[list[Completion]]:
        if isinstance(prompts, str):
            raise TypeError("generate() takes a list of prompts")
        if not prompts:
            return []
        encoded = [self.encode(p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        per_batch = max(1, self.batch_size // params.n)
        results: list[list[Completion] | None] = [None] * len(prompts)
        devices = [self.device] if self.device.type == "cuda" else []
        # The seeded RNG is process-global: two threads generating at once (the flows' thread runner mining two
        # shards) would draw from each other's streams.  One sampler at a time keeps samples a function of
        # (prompts, params, seed) alone; parallel shards that should really overlap run in processes (Dask).
        with _SAMPLING_LOCK, torch.random.fork_rng(devices=devices):
            if self.share_prefixes:
                chunks = self._group_chunks(encoded, per_batch * params.n, params.n)
                for b, chunk in enumerate(self._progress(chunks, "generate")):
                    if params.seed is not None:
                        torch.manual_seed(int(params.seed) + b)
                    outs = self._generate_shared(encoded, chunk, params)
                    members = [i for _cut, idx in chunk for i in idx]
                    for j, i in enumerate(members):
                        results[i] = outs[j * params.n : (j + 1) * params.n]
                return results  # type: ignore[return-value]
            for b, idx in enumerate(self._batches(order, per_batch, "generate", [len(e) for e in encoded])):
                if params.seed is not None:
                    torch.manual_seed(int(params.seed) + b)
                outs = self._generate_batch([encoded[i] for i in idx], params)
                for j, i in enumerate(idx):
                    results[i] = outs[j * params.n : (j + 1) * params.n]
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------------------------ shared prefixes

    def _prefix_groups(
        self, encoded: Sequence[Sequence[int]], min_prefix: int = 32, keep: float = 0.8
    ) -> list[tuple[int, list[int]]]:
        """``(cut, members)``: prompts sorted by their ids, adjacent ones joined while their common prefix stays
        ≥ ``min_prefix`` tokens and ≥ ``keep`` × the group's prefix so far; ``cut`` = tokens of the shared
        prefix that go to the cache (at most each member's length − 1: a row needs one uncached token)."""
        groups: list[list[Any]] = []
        for i in sorted(range(len(encoded)), key=lambda j: list(encoded[j])):
            if groups:
                g = groups[-1]
                a, b = encoded[g[1][-1]], encoded[i]
                lcp = next((t for t, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                shared = min(g[0], lcp)
                if shared >= min_prefix and shared >= keep * g[0]:
                    g[0] = shared
                    g[1].append(i)
                    continue
            groups.append([len(encoded[i]), [i]])
        return [(min(shared, min(len(encoded[i]) for i in members) - 1), members) for shared, members in groups]

    def _group_chunks(
        self, encoded: Sequence[Sequence[int]], max_rows: int, n: int
    ) -> list[list[tuple[int, list[int]]]]:
        """Batches of prefix groups: at most ``max_rows`` rows (members × n) and ``max_batch_tokens`` padded
        tokens (rows × (widest prefix + widest suffix)); a group larger than a batch is split."""
        pieces: list[tuple[int, list[int]]] = []
        per = max(1, max_rows // n)
        for cut, members in self._prefix_groups(encoded):
            pieces += [(cut, members[k : k + per]) for k in range(0, len(members), per)]
        pieces.sort(key=lambda g: -max(len(encoded[i]) for i in g[1]))  # longest first, as the plain path
        chunks: list[list[tuple[int, list[int]]]] = []
        for piece in pieces:
            if chunks:
                cur = chunks[-1] + [piece]
                rows = n * sum(len(m) for _c, m in cur)
                width = max(c for c, _m in cur) + max(len(encoded[i]) - c for c, m in cur for i in m)
                if rows <= max_rows and (not self.max_batch_tokens or rows * width <= self.max_batch_tokens):
                    chunks[-1] = cur
                    continue
            chunks.append([piece])
        return chunks

    def _progress(self, chunks: list, desc: str):
        show = self.progress if self.progress is not None else len(chunks) > 1
        if show:
            from tqdm.auto import tqdm

            return tqdm(chunks, desc=desc, unit="batch", leave=False)
        return chunks

    def _shared_inputs(self, encoded: Sequence[Sequence[int]], chunk: list[tuple[int, list[int]]], n: int):
        """Prefill each group's prefix once; return (cache, ids, mask) of all rows (members × n, in order) with
        the cache covering the prefix columns, and the width of that prefix region."""
        from transformers import DynamicCache

        prefixes = [list(encoded[m[0]][:cut]) for cut, m in chunk]
        cache = DynamicCache(config=self.model.config)
        width_p = max(len(p) for p in prefixes)
        if width_p:
            # a group with nothing to share (1-token prompts) gets a placeholder that no row attends to
            pids, pmask, ppos = self._pad_left([p if p else [self.pad_id] for p in prefixes])
            if self.prefix_store is not None:
                cache = self._stored_prefixes(prefixes, width_p)
            else:
                self.model(
                    input_ids=pids,
                    attention_mask=pmask,
                    position_ids=ppos,
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
        rows = [(g, i) for g, (_cut, members) in enumerate(chunk) for i in members for _ in range(n)]
        if width_p:
            # transformers annotates the index as torch.LongTensor, which torch.tensor(..., dtype=long) is at runtime
            cache.reorder_cache(
                torch.tensor([g for g, _i in rows], dtype=torch.long, device=self.device)  # type: ignore[arg-type]
            )
        suffixes = [list(encoded[i][chunk[g][0] :]) for g, i in rows]
        width_s = max(len(x) for x in suffixes)
        ids = torch.full((len(rows), width_p + width_s), self.pad_id, dtype=torch.long, device=self.device)
        mask = torch.zeros_like(ids)
        for r, ((g, _i), suf) in enumerate(zip(rows, suffixes)):
            if width_p and prefixes[g]:
                ids[r, :width_p] = pids[g]
                mask[r, :width_p] = pmask[g]
            ids[r, width_p + width_s - len(suf) :] = torch.tensor(suf, dtype=torch.long)
            mask[r, width_p + width_s - len(suf) :] = 1
        return (cache if width_p else None), ids, mask, width_p

    def _prefix_kv(self, prefix: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """K/V of one unpadded prefix: the stored part reused, the rest prefilled after it, the whole stored."""
        from transformers import DynamicCache

        store = self.prefix_store
        assert store is not None  # called only when the engine has a prefix store (see _stored_prefixes)
        have, kv = store.lookup(prefix)
        store.reused_tokens += have
        if have == len(prefix):
            return kv  # type: ignore[return-value]
        cache = (
            DynamicCache(ddp_cache_data=kv, config=self.model.config) if kv else DynamicCache(config=self.model.config)
        )
        rest = torch.tensor([prefix[have:]], dtype=torch.long, device=self.device)
        pos = torch.arange(have, len(prefix), device=self.device).unsqueeze(0)
        self.model(
            input_ids=rest,
            attention_mask=torch.ones((1, len(prefix)), dtype=torch.long, device=self.device),
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        store.prefilled_tokens += len(prefix) - have
        # transformers types Cache.layers as also admitting linear-attention layers (no keys/values) and a layer's
        # keys/values as Optional (unset until filled); a DynamicCache of the attention models this engine serves
        # holds DynamicLayers, all filled by the prefill above
        kv = [(layer.keys, layer.values) for layer in cache.layers]  # type: ignore[union-attr,misc]
        store.put(prefix, kv)
        return kv

    def _stored_prefixes(self, prefixes: list[list[int]], width_p: int):
        """A left-padded cache of all group prefixes built from the store (each prefix prefilled alone, after its
        longest stored prefix); padded columns hold zeros that the attention mask hides."""
        from transformers import DynamicCache

        rows = [self._prefix_kv(p) if p else None for p in prefixes]
        ref = next(r for r in rows if r is not None)
        layers = []
        for li, (k0, v0) in enumerate(ref):
            k = k0.new_zeros((len(prefixes), k0.shape[1], width_p, k0.shape[3]))
            v = v0.new_zeros((len(prefixes), v0.shape[1], width_p, v0.shape[3]))
            for g, r in enumerate(rows):
                if r is not None:
                    n = r[li][0].shape[2]
                    k[g, :, width_p - n :] = r[li][0][0]
                    v[g, :, width_p - n :] = r[li][1][0]
            layers.append((k, v))
        return DynamicCache(ddp_cache_data=layers, config=self.model.config)

    def _generate_shared(
        self, encoded: Sequence[Sequence[int]], chunk: list[tuple[int, list[int]]], p: GenerationParams
    ) -> list[Completion]:
        cache, ids, mask, _wp = self._shared_inputs(encoded, chunk, p.n)
        recorder = _LogprobRecorder()
        kwargs: dict[str, Any] = dict(
            generation_config=self._gen_config(p), logits_processor=[recorder], stopping_criteria=self._stopping(p.stop)
        )
        if cache is not None:
            kwargs["past_key_values"] = cache
        out = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        width = ids.shape[1]
        gen = out.sequences[:, width:].cpu()
        lps = recorder.finish(gen.to(recorder.prev.device) if recorder.prev is not None else gen)
        return [self._completion(gen[r].tolist(), lps[r].tolist(), p) for r in range(gen.shape[0])]

    def _generate_batch(self, seqs: list[list[int]], p: GenerationParams) -> list[Completion]:
        ids, mask, pos = self._pad_left(seqs)
        width = ids.shape[1]
        recorder = _LogprobRecorder()
        kwargs: dict[str, Any] = dict(
            generation_config=self._gen_config(p),
            logits_processor=[recorder],
            stopping_criteria=self._stopping(p.stop),
        )
        if p.n > 1 and self.prefill_once and width > 1:
            # Prefill every prompt once (all tokens but the last), then repeat the cache n times; generate()
            # sees a cache covering all but the last input token and feeds only that token on its first step.
            from transformers import DynamicCache

            cache = DynamicCache(config=self.model.config)
            self.model(
                input_ids=ids[:, :-1],
                attention_mask=mask[:, :-1],
                position_ids=pos[:, :-1],
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            cache.batch_repeat_interleave(p.n)
            ids = ids.repeat_interleave(p.n, dim=0)
            mask = mask.repeat_interleave(p.n, dim=0)
            out = self.model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache, **kwargs)
        else:
            if p.n > 1:
                ids = ids.repeat_interleave(p.n, dim=0)
                mask = mask.repeat_interleave(p.n, dim=0)
            if self.static_cache:
                # A preallocated cache: the dynamic one re-concatenates every layer's K/V at every step, which
                # on CPU made 8 × 2.4k-token prompts decode 4× slower (measured: 118 s vs 28 s for 24 tokens
                # at 1.2k context).
                kwargs["generation_config"].cache_implementation = "static"
            out = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        gen = out.sequences[:, width:].cpu()
        lps = recorder.finish(gen.to(recorder.prev.device) if recorder.prev is not None else gen)
        return [self._completion(gen[r].tolist(), lps[r].tolist(), p) for r in range(gen.shape[0])]

    def _completion(self, tokens: list[int], lps: list[float], p: GenerationParams) -> Completion:
        finish = "length"
        eos = set(self.eos_ids)
        for k, t in enumerate(tokens):
            if t in eos:
                tokens, lps, finish = tokens[:k], lps[:k], "stop"
                break
        text = self.decode(tokens)
        stop_reason = None
        if p.stop:
            cut, stop_reason, _ = apply_stop(text, p.stop, p.include_stop_str_in_output)
            if stop_reason is not None:
                # Keep the shortest token prefix that still contains the stop string at the same place
                # (normally the whole sequence: generation halted on the token completing it).
                k = len(tokens)
                while k > 1:
                    c2, s2, _ = apply_stop(self.decode(tokens[: k - 1]), p.stop, p.include_stop_str_in_output)
                    if s2 is None or c2 != cut:
                        break
                    k -= 1
                tokens, lps, text, finish = tokens[:k], lps[:k], cut, "stop"
            elif finish == "length" and len(tokens) < p.max_new_tokens:
                finish = "stop"  # StopStringCriteria matched across the prompt/answer boundary
        return Completion(text=text, token_ids=tokens, logprobs=lps, finish_reason=finish, stop_reason=stop_reason)

    # ------------------------------------------------------------------------------------------------ scoring

    @torch.inference_mode()
    def score(self, prompts: Sequence[str], continuations: Sequence[str | Sequence[int]]) -> list[list[float]]:
        """Per-token log-probs of each continuation: the prompt and continuation ids are joined at the id level."""
        pairs = score_pairs(self.tokenizer, self.encode, prompts, continuations)
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        out: list[list[float] | None] = [None] * len(pairs)
        for idx in self._batches(order, self.batch_size, "score", [len(a) + len(b) for a, b in pairs]):
            seqs = [pairs[i][0] + pairs[i][1] for i in idx]
            ids, mask, pos = self._pad_left(seqs)
            n_keep = max(len(pairs[i][1]) for i in idx)
            if n_keep == 0:
                for i in idx:
                    out[i] = []
                continue
            # Logits at position t predict token t+1: keep the last n_keep+1 positions only.
            logits = self.model(
                input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=n_keep + 1
            ).logits.float()
            lp = torch.log_softmax(logits[:, :-1], dim=-1)
            tgt = ids[:, -n_keep:]
            got = lp.gather(2, tgt.unsqueeze(-1)).squeeze(-1).cpu()
            for r, i in enumerate(idx):
                m = len(pairs[i][1])
                out[i] = got[r, n_keep - m :].tolist() if m else []
        return out  # type: ignore[return-value]

    def candidate_ids(self, candidate_tokens: Sequence[str]) -> list[int]:
        """First token id of each candidate; two candidates sharing one is an error (the answer is ambiguous)."""
        ids = []
        for c in candidate_tokens:
            t = self.tokenizer(c, add_special_tokens=False)["input_ids"]
            if not t:
                raise ValueError(f"candidate {c!r} tokenises to nothing")
            if len(t) > 1:
                log.debug("candidate %r is %d tokens; using its first token", c, len(t))
            ids.append(int(t[0]))
        if len(set(ids)) != len(ids):
            raise ValueError(f"candidates {list(candidate_tokens)} share a first token: {ids}")
        return ids

    @torch.inference_mode()
    def next_token_logprobs(self, prompts: Sequence[str], candidate_tokens: Sequence[str]) -> list[dict[str, float]]:
        cand = self.candidate_ids(candidate_tokens)
        encoded = [self.encode(p) for p in prompts]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        out: list[dict[str, float] | None] = [None] * len(encoded)
        sel = torch.tensor(cand, dtype=torch.long)
        if self.share_prefixes:
            for chunk in self._progress(self._group_chunks(encoded, self.batch_size, 1), "next-token"):
                cache, ids, mask, width_p = self._shared_inputs(encoded, chunk, 1)
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                logits = self.model(
                    input_ids=ids[:, width_p:],
                    attention_mask=mask,
                    position_ids=pos[:, width_p:],
                    past_key_values=cache,
                    use_cache=cache is not None,
                    logits_to_keep=1,
                ).logits
                lp = torch.log_softmax(logits[:, -1].float(), dim=-1).cpu()[:, sel]
                members = [i for _cut, idx in chunk for i in idx]
                for r, i in enumerate(members):
                    out[i] = {c: float(v) for c, v in zip(candidate_tokens, lp[r].tolist())}
            return out  # type: ignore[return-value]
        for idx in self._batches(order, self.batch_size, "next-token", [len(e) for e in encoded]):
            ids, mask, pos = self._pad_left([encoded[i] for i in idx])
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits
            lp = torch.log_softmax(logits[:, -1].float(), dim=-1).cpu()[:, sel]
            for r, i in enumerate(idx):
                out[i] = {c: float(v) for c, v in zip(candidate_tokens, lp[r].tolist())}
        return out  # type: ignore[return-value]
