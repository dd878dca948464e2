"""Warm-up SFT (§4.2, Eq. 2–3) on the tiny model, and the typed config it runs under.

Each training test runs a handful of optimiser steps of the tiny random model (seconds on 2 CPU cores).
"""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from itool_core.calls import NO_CALL_TEXT, PromptStyle, ToolCall, render_prompt, render_target
from itool_core.config import (
    PROFILES,
    BufferConfig,
    ConfigError,
    RunConfig,
    SFTConfig,
    SplitConfig,
    dump_config,
    load_config,
    profile,
)
from itool_core.data.records import Example
from itool_core.models import tiny_model
from itool_core.train.common import quiet_progress
from itool_core.train.sft import (
    answer_loss,
    build_sft_records,
    build_trainer,
    planned_steps,
    sft_pair,
    tokenize_pair,
    train_sft,
)

torch.set_num_threads(2)

TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "dict", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
CITIES = ["Paris", "Rome", "Oslo", "Lima", "Kyiv", "Doha"]


def examples(n: int = 6, prefix: str = "w") -> list[Example]:
    out = []
    for i in range(n):
        city = CITIES[i % len(CITIES)]
        target = [] if i % 3 == 2 else [ToolCall("get_weather", {"city": city})]
        out.append(
            Example(
                f"{prefix}{i}",
                "synthetic",
                "simple",
                TOOLS,
                [{"role": "user", "content": f"Weather in {city}?" if target else "Tell me a joke."}],
                target,
            )
        )
    return out


# Small, fast, and a learning rate big enough that a few steps visibly move a random model.  fp32: on a
# hidden-64 model bf16 autocast costs more in casts than it saves (3× slower); the curriculum test keeps bf16 on.
FAST = SFTConfig(per_device_batch_size=2, learning_rate=1e-2, max_steps_per_stage=1, logging_steps=1, bf16=False)


# ------------------------------------------------------------------------------------------------ data


def test_pair_uses_the_one_renderer_and_ends_with_the_end_token(smol_tokenizer):
    tok = smol_tokenizer
    call, no_call = examples(3)[0], examples(3)[2]
    prompt, completion = sft_pair(tok, call)
    assert prompt == render_prompt(tok, TOOLS, call.messages) and prompt.endswith("<|im_start|>assistant\n")
    assert completion == "[get_weather(city='Paris')]<|im_end|>"
    assert sft_pair(tok, no_call)[1] == NO_CALL_TEXT + "<|im_end|>"
    compact = sft_pair(tok, call, PromptStyle("compact"))[0]
    assert len(compact) < len(prompt)


def test_too_long_examples_are_dropped_and_counted(smol_tokenizer):
    tok = smol_tokenizer
    exs = examples(3)
    n = sum(map(len, tokenize_pair(tok, *sft_pair(tok, exs[0]))))
    records, dropped = build_sft_records(exs, tok, max_length=n)
    assert tok.decode(records[0]["input_ids"]).endswith("[get_weather(city='Paris')]<|im_end|>")
    assert dropped == ["w2"]  # the no-call sentence is longer than the call: it no longer fits
    assert build_sft_records(exs, tok, max_length=None)[1] == []


def test_ids_are_joined_as_the_engines_see_the_prompt(smol_tokenizer):
    tok = smol_tokenizer
    for ex in examples(3):
        prompt, completion = sft_pair(tok, ex)
        p_ids, c_ids = tokenize_pair(tok, prompt, completion)
        assert p_ids == tok(prompt, add_special_tokens=False)["input_ids"]  # no BOS added to a templated prompt
        # SmolLM2's tokenizer does not merge across the boundary: the joined ids are the text's ids
        assert p_ids + c_ids == tok(prompt + completion, add_special_tokens=False)["input_ids"]


def test_completion_only_mask(tmp_path):
    """trl's labels: −100 on every prompt token, the answer tokens (end token included) are trained."""
    from peft import LoraConfig, get_peft_model

    model, tok = tiny_model(seed=0)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    exs = examples(3)
    records, _ = build_sft_records(exs, tok)
    with quiet_progress():
        trainer = build_trainer(peft_model, tok, records, FAST, 1, tmp_path)
    assert len(trainer.train_dataset) == 3
    by_ids = {tuple(r["input_ids"]): r["labels"] for r in trainer.train_dataset}  # trl shuffles: match by ids
    for ex in exs:
        prompt, completion = sft_pair(tok, ex)
        p_ids, c_ids = tokenize_pair(tok, prompt, completion)
        labels = by_ids[tuple(p_ids + c_ids)]
        assert labels[: len(p_ids)] == [-100] * len(p_ids)
        assert labels[len(p_ids) :] == c_ids and -100 not in labels[len(p_ids) :]
        assert labels[-1] == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
        assert tok.decode(labels[len(p_ids) :]) == completion == render_target(ex.target) + "<|im_end|>"
    # the collator pads on the right with label −100 and keeps every row's answer trained
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    pad_rows = batch["attention_mask"] == 0
    assert pad_rows.any() and (batch["labels"][pad_rows] == -100).all()
    assert (batch["labels"] != -100).any(dim=1).all()


def test_planned_steps_arithmetic():
    cfg = SFTConfig(per_device_batch_size=4, grad_accum_steps=2, epochs_per_stage=1.0)
    assert planned_steps(17, cfg) == 3  # 5 batches → 3 updates
    assert planned_steps(16, dataclasses.replace(cfg, epochs_per_stage=2.0)) == 4
    assert planned_steps(16, dataclasses.replace(cfg, epochs_per_stage=0.5)) == 1
    assert planned_steps(100, dataclasses.replace(cfg, max_steps_per_stage=2)) == 2
    assert planned_steps(0, cfg) == 0


# ------------------------------------------------------------------------------------------------ training


def _answer_loss(model, tok, exs) -> float:
    """Mean answer-token NLL of ``exs`` (fp32, no autocast): the SFT objective on that batch."""
    import math

    from itool_core.data.replay import target_perplexity

    return sum(math.log(h) for h in target_perplexity(model, tok, exs, dtype="float32")) / len(exs)


def test_sft_moves_lora_and_lowers_the_loss_on_its_batch(tmp_path):
    model, tok = tiny_model(seed=1)
    exs = examples(2)
    before = _answer_loss(model, tok, exs)
    cfg = dataclasses.replace(
        FAST, epochs_per_stage=3.0, max_steps_per_stage=None, merge=False, lr_scheduler="constant"
    )
    result = train_sft(model, [("all", exs)], cfg, tmp_path, tokenizer=tok)
    after = _answer_loss(result.model, tok, exs)
    assert after < before - 0.5, (before, after)  # random 2-layer model: 10.75 → 9.98 in 3 steps
    st = result.stages[0]
    assert st.steps == 3 and st.last_loss < st.first_loss and st.tokens > 0 and st.tokens_per_s > 0
    adapter = load_file(tmp_path / "stage_1_all" / "adapter_model.safetensors")
    lora_b = [t for k, t in adapter.items() if "lora_B" in k]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: training moved every adapter
    assert result.merged_dir is None and json.loads((tmp_path / "sft_result.json").read_text())["mode"] == "curriculum"


def test_answer_loss_normalisations_and_decision_weight():
    from types import SimpleNamespace

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, requires_grad=True)
    labels = torch.tensor(
        [
            [-100, -100, -100, -100, 3],  # one answer token (predicted from position 3)
            [-100, 1, 2, 4, 5],
        ]
    )  # four answer tokens, the first predicted from position 0
    out = SimpleNamespace(logits=logits)
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), labels[:, 1:].clamp(min=0), reduction="none"
    )
    mask = labels[:, 1:] != -100
    per_example = [(nll[i] * mask[i]).sum() / mask[i].sum() for i in range(2)]
    loss = answer_loss(out, labels)
    assert torch.allclose(loss, (per_example[0] + per_example[1]) / 2)
    token_mean = (nll * mask).sum() / mask.sum()  # trl's normalisation: the short answer weighs 1/5
    assert torch.allclose(answer_loss(out, labels, normalisation="token"), token_mean)
    assert not torch.allclose(loss, token_mean)
    # decision weight 3: each answer's first token (row 0 position 3, row 1 position 0) counts three times
    w = torch.tensor([[0, 0, 0, 3.0], [3.0, 1, 1, 1]])
    assert torch.allclose(
        answer_loss(out, labels, normalisation="token", decision_weight=3.0), (nll * w).sum() / w.sum()
    )
    assert torch.allclose(
        answer_loss(out, labels, decision_weight=3.0), (nll[0, 3] + (nll[1] * w[1]).sum() / w[1].sum()) / 2
    )  # a one-token answer: unchanged
    loss.backward()
    assert logits.grad[0, 3].abs().sum() > 0 and logits.grad[0, :3].abs().sum() == 0  # prompt positions untouched
    logits.grad = None
    answer_loss(out, labels, normalisation="token", decision_weight=3.0).backward()
    g = logits.grad[1].abs().sum(dim=-1)  # row 1: the decision's gradient grows relative to the later tokens'
    logits.grad = None
    answer_loss(out, labels, normalisation="token").backward()
    g1 = logits.grad[1].abs().sum(dim=-1)
    assert torch.allclose(g[0] / g[1], 3 * g1[0] / g1[1])
    empty = answer_loss(out, torch.full_like(labels, -100))
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ConfigError, match="sft.decision_weight"):
        SFTConfig(decision_weight=0.0)


def test_example_normalisation_is_the_mean_of_per_example_answer_nll(tmp_path):
    """Through the real trl trainer: its loss on a batch == the mean over examples of each answer's mean NLL
    (measured independently, by the buffer's perplexity code), so labels, shift and end token line up."""
    import math

    from peft import LoraConfig, get_peft_model

    from itool_core.data.replay import target_perplexity

    model, tok = tiny_model(seed=3)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    exs = examples(3)  # answers of different lengths: two calls and one "no call"
    records, _ = build_sft_records(exs, tok)
    cfg = dataclasses.replace(FAST, loss_normalisation="example", per_device_batch_size=3)
    with quiet_progress():
        trainer = build_trainer(peft_model, tok, records, cfg, 1, tmp_path)
    assert trainer.loss_is_scaled_for_ga is False  # a per-batch mean: gradient accumulation divides it
    two_steps = dataclasses.replace(
        cfg, epochs_per_stage=2.0, max_steps_per_stage=2, merge=False, lr_scheduler="constant"
    )
    st = train_sft(tiny_model(seed=3)[0], [("all", exs)], two_steps, tmp_path / "run", tokenizer=tok).stages[0]
    assert st.steps == 2 and st.last_loss < st.first_loss  # it trains
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    peft_model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(peft_model, dict(batch)).item()
    expected = sum(math.log(h) for h in target_perplexity(peft_model, tok, exs, dtype="float32")) / len(exs)
    assert loss == pytest.approx(expected, rel=1e-4)
    # trl's own normalisation on the same batch: the per-example means weighted by answer length
    n = [len(tokenize_pair(tok, *sft_pair(tok, ex))[1]) for ex in exs]
    m = [math.log(h) for h in target_perplexity(peft_model, tok, exs, dtype="float32")]
    with quiet_progress():
        token = build_trainer(
            peft_model, tok, records, dataclasses.replace(cfg, loss_normalisation="token"), 1, tmp_path
        )
    with torch.no_grad():
        token_loss = token.compute_loss(peft_model, dict(batch)).item()
    assert token_loss == pytest.approx(sum(a * b for a, b in zip(n, m)) / sum(n), rel=1e-4)
    with torch.no_grad():  # the hand-written token mean (taken when a decision weight is set) is trl's
        ours = answer_loss(
            peft_model(**{k: batch[k] for k in ("input_ids", "attention_mask")}), batch["labels"], normalisation="token"
        ).item()
    assert ours == pytest.approx(token_loss, rel=1e-4)
    weighted = build_trainer(
        peft_model, tok, records, dataclasses.replace(cfg, loss_normalisation="token", decision_weight=5.0), 1, tmp_path
    )
    assert weighted.loss_is_scaled_for_ga is False
    with torch.no_grad():
        fwd = peft_model(**{k: batch[k] for k in ("input_ids", "attention_mask")})
        assert weighted.compute_loss(peft_model, dict(batch)).item() == pytest.approx(
            answer_loss(fwd, batch["labels"], normalisation="token", decision_weight=5.0).item(), rel=1e-5
        )
        assert answer_loss(fwd, batch["labels"], normalisation="token", decision_weight=5.0).item() != pytest.approx(
            token_loss, rel=1e-3
        )
    assert len(set(n)) > 1  # the two normalisations differ on this batch only because the lengths do
    with pytest.raises(ConfigError, match="sft.loss_normalisation"):
        SFTConfig(loss_normalisation="sequence")


def test_the_trainer_projects_only_answer_positions_and_matches_trls_own_loss_and_gradients(tmp_path):
    """The SFT trainer runs the LM head on the answer positions only (``answer_positions``); trl's fused head
    projects every position off-GPU.  On one batch of answers of different lengths both give the same token-mean
    loss — also with gradient accumulation's ``num_items_in_batch`` — and the same LoRA gradients."""
    from peft import LoraConfig, get_peft_model
    from trl import SFTTrainer

    from itool_core.train.sft import answer_positions

    exs = examples(3)
    grads, losses = [], []
    for ours in (True, False):
        model, tok = tiny_model(seed=4)
        torch.manual_seed(0)
        peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
        records, _ = build_sft_records(exs, tok)
        cfg = dataclasses.replace(FAST, loss_normalisation="token", per_device_batch_size=3)
        with quiet_progress():
            trainer = build_trainer(peft_model, tok, records, cfg, 1, tmp_path)
            if not ours:  # trl's SFTTrainer, same arguments and data
                trainer = SFTTrainer(
                    model=peft_model, args=trainer.args, train_dataset=trainer.train_dataset, processing_class=tok
                )
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
        keep = answer_positions(batch["labels"])
        assert 0 < len(keep) < batch["labels"].shape[1] // 2  # the prompt positions are skipped
        loss = trainer.compute_loss(peft_model, dict(batch), num_items_in_batch=torch.tensor(50))
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in peft_model.named_parameters() if p.grad is not None})
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-6)


def test_length_grouped_windows_batch_similar_lengths_from_a_random_prefix(tmp_path):
    """Every example once per epoch; micro-batches of similar length (little padding); the examples of the first
    windows are the seeded permutation's prefix whatever the lengths (a short run is not biased to long ones);
    seeded, and a new order per epoch.  The trainer uses it."""
    import random

    from itool_core.train.sft import LengthGroupedWindows

    rng = random.Random(0)
    lengths = [rng.randint(300, 1000) for _ in range(203)]
    s = LengthGroupedWindows(lengths, group=4, seed=7)
    order = list(s)
    assert sorted(order) == list(range(203)) and len(s) == 203
    batches = [order[i : i + 4] for i in range(0, 200, 4)]

    def efficiency(bs):
        return sum(sum(lengths[i] for i in b) / (len(b) * max(lengths[i] for i in b)) for b in bs) / len(bs)

    shuffled = random.Random(1).sample(range(203), 203)
    assert efficiency(batches) > 0.93 > 0.85 > efficiency([shuffled[i : i + 4] for i in range(0, 200, 4)])
    flat = list(LengthGroupedWindows([1] * 203, group=4, seed=7))  # equal lengths: the permutation itself
    assert set(order[:32]) == set(flat[:32]) and set(order[:64]) == set(flat[:64])
    assert list(LengthGroupedWindows(lengths, group=4, seed=7)) == order
    s.set_epoch(1)
    assert list(s) != order

    model, tok = tiny_model(seed=0)
    records, _ = build_sft_records(examples(6), tok)
    with quiet_progress():
        trainer = build_trainer(model, tok, records, FAST, 1, tmp_path)
    assert isinstance(trainer._get_train_sampler(), LengthGroupedWindows)


def test_curriculum_runs_easy_medium_hard_in_order_and_saves_each_stage(tmp_path):
    model, tok = tiny_model(seed=2)
    exs = examples(6)
    events = []
    cfg = dataclasses.replace(FAST, bf16=True)  # the production CPU path: bf16 autocast + use_cpu
    result = train_sft(
        model,
        [("easy", exs[:2]), ("medium", exs[2:4]), ("hard", exs[4:])],
        cfg,
        tmp_path,
        lambda e, m: events.append((e, m)),
        tokenizer=tok,
    )
    starts = [m["stage"] for e, m in events if e == "stage_start"]
    assert starts == ["easy", "medium", "hard"]
    assert [e for e, _ in events] == ["stage_start", "log", "stage_end"] * 3 + ["end"]
    assert [m["step"] for e, m in events if e == "log"] == [1, 2, 3]  # one run-global step count
    assert [s.name for s in result.stages] == ["easy", "medium", "hard"]
    for i, name in enumerate(["easy", "medium", "hard"], start=1):
        assert (tmp_path / f"stage_{i}_{name}" / "adapter_model.safetensors").is_file()
    # the adapter is continued: each stage's saved weights differ from the previous stage's
    a1 = load_file(tmp_path / "stage_1_easy" / "adapter_model.safetensors")
    a3 = load_file(tmp_path / "stage_3_hard" / "adapter_model.safetensors")
    assert any(not torch.equal(a1[k], a3[k]) for k in a1)
    # the merged model loads and equals the in-process result
    from itool_core.models import load_policy

    merged, _ = load_policy(result.merged_dir)
    x = tok("hello", return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(merged(**x).logits, result.model(**x).logits, atol=1e-5)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    end = events[-1][1]
    assert end["adapter_dir"].endswith("stage_3_hard") and end["peak_rss_mb"] > 0


def test_resume_reuses_finished_stages_and_reproduces_the_uninterrupted_run(tmp_path):
    exs = examples(6)
    stages = [("easy", exs[:2]), ("medium", exs[2:4]), ("hard", exs[4:])]
    cfg = dataclasses.replace(FAST, merge=False)
    full, interrupted = tmp_path / "full", tmp_path / "interrupted"
    model, tok = tiny_model(seed=4)
    train_sft(model, stages, cfg, full, tokenizer=tok)
    model, tok = tiny_model(seed=4)
    train_sft(model, stages[:2], cfg, interrupted, tokenizer=tok)  # "dies" before the hard stage

    events = []
    model, tok = tiny_model(seed=4)
    result = train_sft(model, stages, cfg, interrupted, lambda e, m: events.append((e, m)), tokenizer=tok, resume=True)
    assert [s.resumed for s in result.stages] == [True, True, False]
    assert [e for e, _ in events] == ["stage_start", "stage_end"] * 2 + ["stage_start", "log", "stage_end", "end"]
    assert [m["step"] for e, m in events if e == "log"] == [3]  # the step count continues after resumed stages
    assert (
        result.stages[0].train_loss
        == json.loads((full / "stage_1_easy" / "stage_result.json").read_text())["result"]["train_loss"]
    )
    a = load_file(full / "stage_3_hard" / "adapter_model.safetensors")
    b = load_file(interrupted / "stage_3_hard" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # a changed config or changed data is never resumed: every stage is trained again
    for changed_cfg, changed_stages in [
        (dataclasses.replace(cfg, learning_rate=2e-2), stages),
        (cfg, [("easy", exs[1:3]), ("medium", exs[2:4]), ("hard", exs[4:])]),
    ]:
        model, tok = tiny_model(seed=4)
        result = train_sft(model, changed_stages, changed_cfg, interrupted, tokenizer=tok, resume=True)
        assert [s.resumed for s in result.stages] == [False, False, False]
    # toggling merge does not change the weights, so it does not invalidate finished stages
    model, tok = tiny_model(seed=4)
    result = train_sft(model, stages, dataclasses.replace(cfg, merge=True), full, tokenizer=tok, resume=True)
    assert [s.resumed for s in result.stages] == [True, True, True] and result.merged_dir


class _Crash(Exception):
    pass


def test_resume_continues_an_unfinished_stage_from_its_checkpoint_bit_for_bit(tmp_path):
    exs = examples(12)
    stages = [("easy", exs[:4]), ("hard", exs[4:])]  # hard: 8 examples, batch 2 -> 4 steps
    cfg = dataclasses.replace(FAST, max_steps_per_stage=None, merge=False, checkpoint_steps=2)
    full, interrupted = tmp_path / "full", tmp_path / "interrupted"
    model, tok = tiny_model(seed=5)
    reference = train_sft(model, stages, dataclasses.replace(cfg, checkpoint_steps=0), full, tokenizer=tok)
    assert [s.steps for s in reference.stages] == [2, 4]

    def crash_in_hard_step_3(event, m):  # logs come before the step's checkpoint: checkpoint-2 is the newest
        if event == "log" and m["stage"] == "hard" and m["stage_step"] == 3:
            raise _Crash

    model, tok = tiny_model(seed=5)
    with pytest.raises(_Crash):
        train_sft(model, stages, cfg, interrupted, crash_in_hard_step_3, tokenizer=tok)
    ckpt = interrupted / ".checkpoints" / "stage_2_hard"
    assert (ckpt / "checkpoint-2" / "trainer_state.json").is_file()
    (ckpt / "checkpoint-4").mkdir()  # a save cut short: no trainer_state.json, must be ignored

    events = []
    model, tok = tiny_model(seed=5)
    result = train_sft(model, stages, cfg, interrupted, lambda e, m: events.append((e, m)), tokenizer=tok, resume=True)
    hard = result.stages[1]
    assert [s.resumed for s in result.stages] == [True, False] and hard.resumed_at_step == 2
    assert [m["stage_step"] for e, m in events if e == "log"] == [3, 4]  # only the missing steps are trained
    a = load_file(full / "stage_2_hard" / "adapter_model.safetensors")
    b = load_file(interrupted / "stage_2_hard" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the whole stage's losses and tokens, as the uninterrupted run reports them
    ref = reference.stages[1]
    assert hard.train_loss == pytest.approx(ref.train_loss, rel=1e-6)
    assert (hard.first_loss, hard.last_loss, hard.tokens) == (ref.first_loss, ref.last_loss, ref.tokens)
    assert not (interrupted / ".checkpoints").exists()  # removed once the stage is finished

    # a checkpoint of other inputs is never continued: the stage is trained from its start
    model, tok = tiny_model(seed=5)
    with pytest.raises(_Crash):
        train_sft(model, stages, cfg, interrupted, crash_in_hard_step_3, tokenizer=tok)
    (interrupted / "stage_2_hard" / "stage_result.json").unlink()
    events = []
    model, tok = tiny_model(seed=5)
    result = train_sft(
        model,
        stages,
        dataclasses.replace(cfg, learning_rate=2e-2),
        interrupted,
        lambda e, m: events.append((e, m)),
        tokenizer=tok,
        resume=True,
    )
    assert result.stages[1].resumed_at_step == 0
    assert [m["stage_step"] for e, m in events if e == "log" and m["stage"] == "hard"] == [1, 2, 3, 4]


def test_mixed_mode_trains_once_on_the_union_with_the_same_steps(tmp_path):
    model, tok = tiny_model(seed=3)
    exs = examples(6)
    stages = [("easy", exs[:2]), ("medium", exs[2:4]), ("hard", exs[4:])]
    cfg = dataclasses.replace(FAST, mode="mixed", merge=False)
    events = []
    result = train_sft(model, stages, cfg, tmp_path, lambda e, m: events.append((e, m)), tokenizer=tok)
    assert [s.name for s in result.stages] == ["mixed"]
    assert result.stages[0].n_examples == 6
    assert result.stages[0].steps == sum(planned_steps(2, cfg) for _ in stages) == 3


# ------------------------------------------------------------------------------------------------ config


def test_config_yaml_round_trip(tmp_path):
    for name, cfg in PROFILES.items():
        path = dump_config(cfg, tmp_path / f"{name}.yaml")
        assert load_config(path) == cfg
    custom = dataclasses.replace(
        PROFILES["quick"],
        sft=dataclasses.replace(
            PROFILES["quick"].sft, target_modules=("q_proj", "v_proj"), max_steps_per_stage=5, mode="mixed"
        ),
    )
    assert load_config(dump_config(custom, tmp_path / "c.yaml")) == custom
    # stage configs alone round-trip too
    assert load_config(dump_config(SplitConfig(seed=7), tmp_path / "s.yaml"), SplitConfig) == SplitConfig(seed=7)


def test_profiles_hold_the_paper_setting():
    quick, paper = profile("quick"), profile("paper")
    assert quick.model == "smollm2-135m-instruct" and quick.device == "cpu" and quick.sft.lora_dropout == 0.0
    assert quick.sft.gradient_checkpointing is False and quick.sft.bf16 == "auto" and paper.sft.bf16 is True
    assert paper.model == "meta-llama/Llama-3.1-8B-Instruct" and paper.engine == "openai"
    assert paper.engine_serve() is not None and paper.engine_serve().server == "vllm"
    # the CPU profiles generate on the fastest engine measured there: vLLM (llama-server where it is not
    # installed) with bf16 weights where native
    assert quick.engine == "openai" and quick.engine_serve() is not None
    assert (quick.engine_serve().server, quick.engine_serve().vllm_dtype) == ("auto", "fast")
    assert paper.engine_serve().vllm_dtype == "auto"  # the 8B checkpoint's own bf16
    assert (paper.sft.lora_r, paper.sft.lora_alpha, paper.sft.learning_rate, paper.sft.epochs_per_stage) == (
        16,
        32,
        1e-4,
        3.0,
    )
    assert paper.buffer.alpha == 0.2 and paper.split.pool_fraction == 0.1
    # the paper's α, but below the hardest half: the 135M policy mines no pair from its hardest 10 %
    # (docs/notebook/RESULTS.md)
    assert (quick.buffer.alpha, quick.buffer.skip_hardest, paper.buffer.skip_hardest) == (0.2, 0.5, 0.0)
    with pytest.raises(ConfigError, match="unknown profile"):
        profile("huge")


def test_partial_yaml_overrides_its_profile(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("profile: paper\nsft:\n  epochs_per_stage: 1\nbuffer:\n  alpha: 0.3\n")
    cfg = load_config(p)
    assert cfg.sft.epochs_per_stage == 1.0 and cfg.sft.learning_rate == 1e-4 and cfg.buffer.alpha == 0.3
    assert cfg.model == "meta-llama/Llama-3.1-8B-Instruct"
    p.write_text("")
    assert load_config(p) == PROFILES["quick"]


@pytest.mark.parametrize(
    "text,match",
    [
        ("sft:\n  lora_rr: 8\n", "'sft.lora_rr'"),
        ("modle: x\n", "'modle'"),
        ("split:\n  seed: 1\n  stratify: source\n", "'split.stratify'"),
        ("sft:\n  lora_r: 2.5\n", "sft.lora_r: expected an integer"),
        ("sft:\n  mode: shuffled\n", "sft.mode"),
        ("buffer:\n  alpha: 20\n", "buffer.alpha"),
        ("sft: 3\n", "sft: expected a mapping"),
        ("sft:\n  tools_style: json\n", "tools_style"),  # buffer (compact in quick) must use the same prompt
    ],
)
def test_config_errors_name_the_key(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(p)


def test_configs_are_frozen_and_validated():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SFTConfig().lora_r = 3  # type: ignore[misc]
    with pytest.raises(ConfigError):
        SplitConfig(pool_fraction=0.0)
    with pytest.raises(ConfigError):
        BufferConfig(dtype="int8")
    ok = RunConfig(sft=SFTConfig(tools_style="compact"), buffer=BufferConfig(tools_style="compact"))
    assert ok.sft.tools_style == "compact"


def test_warmup_cli_splits_trains_and_prints_one_line_per_stage(tmp_path, capsys):
    from itool_core.artifacts import write_table
    from itool_core.cli import main
    from itool_core.models import save_policy
    from itool_core.schemas import EXAMPLES

    model, tok = tiny_model(seed=7)
    model_dir = save_policy(model, tok, tmp_path / "base")
    write_table([e.to_row() for e in examples(12)], tmp_path / "train.parquet", EXAMPLES)
    (tmp_path / "run.yaml").write_text("sft:\n  bf16: false\n  per_device_batch_size: 2\n  learning_rate: 0.01\n")
    rc = main(
        [
            "warmup",
            "--data",
            str(tmp_path / "train.parquet"),
            "--model",
            str(model_dir),
            "--out",
            str(tmp_path / "out"),
            "--config",
            str(tmp_path / "run.yaml"),
            "--max-steps",
            "1",
            "--decision-weight",
            "3",
            "--checkpoint-every",
            "5",
        ]
    )
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    # 11 = 4 no-call (1/1/2) + 7 call (2/2/3): the thirds are cut per answer kind (data/split.py)
    assert lines[0].startswith("[warmup] 12 examples → warm-up 11 (easy 3 / medium 3 / hard 5), pool 1")
    stage_lines = [ln for ln in lines if ln.startswith("[warmup] stage")]
    assert [ln.split()[3] for ln in stage_lines] == ["easy", "medium", "hard"]
    assert all("steps=1" in ln and "tok/s" in ln for ln in stage_lines)
    progress = [ln.split()[1] for ln in lines if " step 1/1 loss " in ln]
    assert progress == ["easy", "medium", "hard"]
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {
        "data",
        "stage_1_easy",
        "stage_2_medium",
        "stage_3_hard",
        "merged",
        "sft_result.json",
    }
    assert {p.name for p in (out / "data").iterdir()} == {
        f"{n}.parquet" for n in ("warmup", "pool", "easy", "medium", "hard")
    }
    recorded = json.loads((out / "sft_result.json").read_text())["config"]
    assert recorded["decision_weight"] == 3.0 and recorded["loss_normalisation"] == "token"
    assert recorded["checkpoint_steps"] == 5

    # the same command with --resume finds every stage finished and trains nothing (checkpointing is not part
    # of a stage's fingerprint: resumed without the flag)
    rc = main(
        [
            "warmup",
            "--data",
            str(tmp_path / "train.parquet"),
            "--model",
            str(model_dir),
            "--out",
            str(out),
            "--config",
            str(tmp_path / "run.yaml"),
            "--max-steps",
            "1",
            "--decision-weight",
            "3",
            "--resume",
        ]
    )
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[3] for ln in lines if ln.startswith("[warmup] stage") and ln.endswith("(resumed)")] == [
        "easy",
        "medium",
        "hard",
    ]
    assert not [ln for ln in lines if " step 1/1 loss " in ln]  # no training step ran
