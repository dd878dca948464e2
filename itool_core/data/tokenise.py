"""One example → the token ids the policy is trained on and scored by: prompt ids, then answer ids.

The warm-up SFT (``train.sft``, Eq. 2–3) trains on exactly these answer tokens and the replay buffer
(``data.replay``, Eq. 4) averages the perplexity over exactly these, so the per-example SFT loss is log h(x)
and the two stages can never disagree about what "the answer" is.  The pair is joined at the id level, both
halves encoded without special tokens: the prompt as the generation engines encode it, then the answer.
Tokenising the joined string would let a tokenizer add a second begin-of-text token (Llama-3) or merge
tokens across the boundary, and the trained context would differ from the one the engines generate from.

It sits in ``data`` (below ``train``) because both the trainer and the buffer need it.
"""

from __future__ import annotations

from ..calls import PromptStyle, render_prompt, render_target
from .records import Example

__all__ = ["end_token", "sft_pair", "tokenize_pair"]


def end_token(tokenizer) -> str:
    """The token that closes an assistant turn: the tokenizer's EOS (``<|im_end|>`` for SmolLM2,
    ``<|eot_id|>`` for Llama-3.1-Instruct) — the one generation stops on and trl would append itself."""
    if not tokenizer.eos_token:
        raise ValueError("the tokenizer has no eos_token: the answer's end cannot be trained")
    return tokenizer.eos_token


def sft_pair(tokenizer, ex: Example, style: PromptStyle = PromptStyle()) -> tuple[str, str]:
    """``(prompt, completion)`` of one example: the policy's exact prompt and the answer it must produce."""
    prompt = render_prompt(tokenizer, ex.tools, ex.messages, style)
    completion = render_target(ex.target) + end_token(tokenizer)
    return prompt, completion


def tokenize_pair(tokenizer, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """``(prompt_ids, completion_ids)``, no special tokens added: the prompt as the engines encode it, the
    answer as the tokens that follow it.  Training (``train.sft``) and perplexity (``data.replay``) both use this."""
    p_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    c_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
    return p_ids, c_ids
