"""Preference update (Eq. 10–11): DPO / IPO / SimPO / ORPO via trl on step-level pairs, with the tiny model.

What is checked: each loss moves the policy's log-ratio margin toward the chosen step; the batches trl trains on
carry EOS only after terminal steps and are exactly the search's ids; the DPO reference is the previous
iteration's policy (the ``policy`` folder), not the original base; PAIRS Parquet artifacts load.
"""

import contextlib
import dataclasses
import json
import math
import warnings

import pytest
import torch

from itool_core.artifacts import write_table
from itool_core.mcts.pairs import PAIRS
from itool_core.models import load_policy, save_policy, tiny_model
from itool_core.registry import LOSSES
from itool_core.train.preference import (
    PreferenceConfig,
    build_trainer,
    completion_logps,
    load_pairs,
    planned_steps,
    prepare_pairs,
    train_preference,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The tiny model's ops are too small to split: on the shared 2-core box (load ≈ 5) a forward+backward of
    # 6 × 40 tokens took 0.23 s on 1 thread and 1.0–1.1 s on 2 (OpenMP workers wait for busy cores).
    # Restored afterwards, so other modules keep their setting.
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


# (steps taken so far, chosen step, chosen terminal, rejected step, rejected terminal)
STEPS = [
    ("", "[get_weather(city='Paris'),", False, "[get_weather(city='London'),", False),  # non-final pair
    ("[get_weather(city='Paris'),", " get_time(zone='CET')]", True, " get_time(zone='PST')]", True),  # final pair
    ("", "[get_weather(city='Paris'),", False, "[get_time(zone='UTC')]", True),  # chosen continues, rejected ends
]


def _tiny_cfg(loss="dpo", **kw):
    # All pairs in one micro-batch, fp32 (exact reference check), a learning rate a tiny random model notices.
    base = dict(
        loss=loss,
        per_device_batch_size=3,
        grad_accum_steps=1,
        max_length=512,
        learning_rate=5e-3,
        lora_r=8,
        lora_alpha=16,
        bf16=False,
        epochs=1,
    )
    base.update(kw)
    return PreferenceConfig(**base)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """``base`` = the original model; ``policy`` = a different merged model (the previous iteration's policy)."""
    root = tmp_path_factory.mktemp("pref")
    model, tok = tiny_model(seed=0)
    base = save_policy(model, tok, root / "base")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    policy = save_policy(model, tok, root / "policy")
    return {"root": root, "base": base, "policy": policy, "tok": tok}


@pytest.fixture(scope="module")
def pairs(folders):
    """PAIRS rows with real tokenizer ids: a chat prompt + steps, as the search stores them.  (The project's
    full tool prompt, ``calls.render_prompt``, is ~400 tokens: 8× slower here and no different for the checks.)"""
    tok = folders["tok"]
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Weather in Paris, and the time in CET?"}],
        tokenize=False,
        add_generation_prompt=True,
    )

    def enc(s):
        return tok(s, add_special_tokens=False)["input_ids"]

    rows = []
    for i, (prefix, ch, ch_term, rj, rj_term) in enumerate(STEPS):
        rows.append(
            {
                "example_id": "ex0",
                "tree_id": "ex0",
                "prompt": prompt + prefix,
                "chosen": ch,
                "rejected": rj,
                "prompt_ids": enc(prompt) + enc(prefix),
                "chosen_ids": enc(ch),
                "rejected_ids": enc(rj),
                "q_chosen": 0.9,
                "q_rejected": -0.5 + 0.1 * i,
                "depth": 1 if prefix else 0,
                "chosen_terminal": ch_term,
                "rejected_terminal": rj_term,
                "is_final_step": ch_term,
            }
        )
    assert tok.eos_token_id not in [t for r in rows for t in r["chosen_ids"] + r["rejected_ids"]]
    return rows


@pytest.fixture(scope="module")
def loaded():
    """Models loaded once per folder (a load costs ~0.7 s, mostly the tokenizer)."""
    cache = {}

    def get(folder):
        if str(folder) not in cache:
            cache[str(folder)] = load_policy(folder)[0]
        return cache[str(folder)]

    return get


def _full(row, side, eos):
    return tuple(row["prompt_ids"] + row[f"{side}_ids"] + ([eos] if row[f"{side}_terminal"] else []))


# ------------------------------------------------------------------------------------------- config + data


def test_config_profiles_defaults_and_validation():
    from itool_core.config import profile

    cpu, gpu = profile("quick").preference, profile("paper").preference
    # the quick profile = the CPU defaults, but 3 passes over its ~15 pairs per iteration
    assert cpu == dataclasses.replace(PreferenceConfig(), epochs=3.0)
    assert cpu.lora_dropout == 0.0 and cpu.bf16 and not cpu.gradient_checkpointing
    assert gpu.gradient_checkpointing and gpu.model_dtype == "bfloat16" and gpu.learning_rate == 5e-5
    with pytest.raises(dataclasses.FrozenInstanceError):
        cpu.beta = 0.5
    assert {name: PreferenceConfig(loss=name).resolved_beta() for name in LOSSES.names()} == {
        "dpo": 0.1,
        "ipo": 0.1,
        "simpo": 2.0,
        "orpo": 0.1,
    }
    assert PreferenceConfig(loss="simpo", beta=2.5).resolved_beta() == 2.5
    assert not PreferenceConfig(loss="orpo").uses_reference and PreferenceConfig(loss="ipo").uses_reference
    for bad in (dict(loss="kto"), dict(beta=0.0), dict(warmup_ratio=1.0), dict(max_steps=0), dict(lora_dropout=1)):
        with pytest.raises(ValueError):
            PreferenceConfig(**bad)
    assert planned_steps(10, PreferenceConfig(per_device_batch_size=2, grad_accum_steps=2, epochs=2)) == 6
    assert planned_steps(10, PreferenceConfig(per_device_batch_size=2, grad_accum_steps=2, epochs=2, max_steps=4)) == 4


def test_prepare_pairs_eos_only_on_terminal_steps_and_ids_untouched(pairs, folders):
    eos = folders["tok"].eos_token_id
    prep = prepare_pairs(pairs, eos, _tiny_cfg())
    assert len(prep.rows) == 3 and prep.n_chosen_terminal == 1 and prep.n_rejected_terminal == 2
    for raw, row in zip(pairs, prep.rows):
        # the full sequences are the search's ids (+ EOS after a terminal step), whatever the prompt split
        assert tuple(row["prompt_ids"] + row["chosen_ids"]) == _full(raw, "chosen", eos)
        assert tuple(row["prompt_ids"] + row["rejected_ids"]) == _full(raw, "rejected", eos)
        for side in ("chosen", "rejected"):
            assert (row[f"{side}_ids"][-1] == eos) == raw[f"{side}_terminal"]
            assert raw[f"{side}_terminal"] or eos not in row[f"{side}_ids"]
        # shared leading tokens moved to the prompt: the completions differ from their first token on
        assert row["chosen_ids"][0] != row["rejected_ids"][0]
    assert prep.n_prefix_tokens_moved > 0
    untrimmed = prepare_pairs(pairs, eos, _tiny_cfg(trim_common_prefix=False))
    assert [r["prompt_ids"] for r in untrimmed.rows] == [p["prompt_ids"] for p in pairs]

    # too long → dropped (never truncated); empty/identical → dropped; stray EOS on a non-terminal step removed
    short = prepare_pairs(pairs, eos, _tiny_cfg(max_length=len(pairs[0]["prompt_ids"]) + 3))
    assert short.n_dropped_too_long == 3 and not short.rows
    odd = [
        dict(pairs[0], chosen_ids=pairs[0]["chosen_ids"] + [eos]),
        dict(pairs[0], rejected_ids=pairs[0]["chosen_ids"]),
    ]
    got = prepare_pairs(odd, eos, _tiny_cfg())
    assert got.n_eos_stripped == 1 and got.n_dropped_empty == 1 and eos not in got.rows[0]["chosen_ids"]


def test_pairs_load_from_parquet_artifact(pairs, tmp_path):
    ref = write_table(pairs, tmp_path / "pairs.parquet", PAIRS)
    for src in (ref, ref.path):
        rows = load_pairs(src)
        assert [r["prompt_ids"] for r in rows] == [p["prompt_ids"] for p in pairs]
        assert [r["chosen_terminal"] for r in rows] == [False, True, False]
    with pytest.raises(ValueError, match="missing"):
        load_pairs([{"prompt_ids": [1]}])


# --------------------------------------------------------------------------------- what trl really trains on


def _batch_sequences(batch):
    """[(chosen full seq, chosen completion, rejected full seq, rejected completion)] from a collated batch."""
    out = []
    if "completion_mask" in batch:  # DPOTrainer: rows [chosen...; rejected...]
        ids, att, comp = batch["input_ids"], batch["attention_mask"].bool(), batch["completion_mask"].bool()
        b = ids.shape[0] // 2
        for i in range(b):
            c, r = i, i + b
            out.append(
                (
                    tuple(ids[c][att[c]].tolist()),
                    ids[c][comp[c]].tolist(),
                    tuple(ids[r][att[r]].tolist()),
                    ids[r][comp[r]].tolist(),
                )
            )
    else:  # CPO / ORPO: one tensor set per side, labels −100 off the completion
        for i in range(batch["chosen_input_ids"].shape[0]):
            row = []
            for side in ("chosen", "rejected"):
                ids, att, lab = (
                    batch[f"{side}_input_ids"][i],
                    batch[f"{side}_attention_mask"][i].bool(),
                    batch[f"{side}_labels"][i],
                )
                row += [tuple(ids[att].tolist()), lab[lab != -100].tolist()]
            out.append(tuple(row))
    return out


@pytest.mark.parametrize("loss", ["dpo", "ipo", "simpo", "orpo"])
def test_trained_batches_end_in_eos_only_after_terminal_steps(loss, pairs, folders, tmp_path):
    eos = folders["tok"].eos_token_id
    trainer, prep, _ = build_trainer(folders["policy"], pairs, _tiny_cfg(loss), tmp_path)
    seqs = [s for batch in trainer.get_train_dataloader() for s in _batch_sequences(batch)]
    assert len(seqs) == 3
    expected = {(_full(p, "chosen", eos), _full(p, "rejected", eos)): p for p in pairs}
    for chosen_seq, chosen_comp, rejected_seq, rejected_comp in seqs:
        raw = expected.pop((chosen_seq, rejected_seq))  # exactly the search's ids, no BOS/EOS/re-tokenisation
        for comp, terminal in ((chosen_comp, raw["chosen_terminal"]), (rejected_comp, raw["rejected_terminal"])):
            assert comp, "empty completion"
            if terminal:
                assert comp[-1] == eos and eos not in comp[:-1]
            else:
                assert eos not in comp  # a non-final step never teaches the policy to stop
    assert not expected


# ------------------------------------------------------------------------------------ each loss learns


def _margin(model, rows, average):
    total = 0.0
    for r in rows:
        c = completion_logps(model, r["prompt_ids"], r["chosen_ids"])
        j = completion_logps(model, r["prompt_ids"], r["rejected_ids"])
        total += (sum(c) / len(c) - sum(j) / len(j)) if average else (sum(c) - sum(j))
    return total / len(rows)


@pytest.mark.parametrize("loss", ["dpo", "ipo", "simpo", "orpo"])
def test_each_loss_moves_the_margin_toward_the_chosen_step(loss, pairs, folders, loaded, tmp_path):
    cfg = _tiny_cfg(loss, epochs=2, bf16=True)  # the CPU default precision (autocast)
    eos = folders["tok"].eos_token_id
    rows = prepare_pairs(pairs, eos, cfg).rows
    average = loss != "dpo"  # the margin each loss optimises: summed (DPO) or per-token (IPO, SimPO, ORPO)
    before = _margin(loaded(folders["policy"]), rows, average)

    events = []
    src = write_table(pairs, tmp_path / "pairs.parquet", PAIRS)  # the stage's input is a PAIRS artifact
    res = train_preference(folders["policy"], src, cfg, tmp_path / "out", callback=lambda e, m: events.append((e, m)))

    after_model, _ = load_policy(res.merged_dir)
    after = _margin(after_model, rows, average)
    # measured (seed 0): dpo 1.75 → 8.9 (summed), ipo / simpo / orpo −0.21 → 1.7 / 1.6 / 1.1 (per token)
    assert after > before + 0.1, (loss, before, after)

    assert res.steps == 2 and res.n_pairs == 3 and res.tokens > 0 and res.tokens_per_s > 0
    assert [e for e, _ in events] == ["start", "log", "log", "end"]
    assert all("rewards/margins" in m and "rewards/accuracies" in m and "loss" in m for e, m in events if e == "log")
    assert {"loss", "rewards/margins", "rewards/accuracies"} <= set(res.metrics)
    assert res.reference == (str(folders["policy"]) if loss in ("dpo", "ipo") else None)
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").is_file()
    saved = json.loads((tmp_path / "out" / "preference_result.json").read_text())
    assert saved["loss"] == loss and saved["merged_dir"] == res.merged_dir


@pytest.mark.parametrize("loss", ["dpo", "ipo"])
def test_trl_computes_the_loss_the_loss_module_states(loss, pairs, folders, loaded, tmp_path):
    """Eq. 10 (and IPO) as ``train.losses.dpo`` writes them, from log-probs computed here, equal the loss trl's
    trainer computes on the same batch — with policy ≠ reference, so the log-ratios are not all zero."""
    from itool_core.train.losses.dpo import dpo_loss, ipo_loss

    cfg = _tiny_cfg(loss)
    trainer, prep, _ = build_trainer(folders["policy"], pairs, cfg, tmp_path, reference=folders["base"])
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    with torch.no_grad():
        got = float(trainer.compute_loss(trainer.model, batch))
    policy, reference = loaded(folders["policy"]), loaded(folders["base"])

    def log_ratio(row, side):
        p = completion_logps(policy, row["prompt_ids"], row[f"{side}_ids"])
        q = completion_logps(reference, row["prompt_ids"], row[f"{side}_ids"])
        return (sum(p) - sum(q)) / (len(p) if loss == "ipo" else 1)  # IPO: per completion token

    fn = dpo_loss if loss == "dpo" else ipo_loss
    expected = [fn(log_ratio(r, "chosen"), log_ratio(r, "rejected"), cfg.resolved_beta()) for r in prep.rows]
    assert len(expected) == 3  # one micro-batch holds all pairs: trl's loss is their mean
    assert abs(got - sum(expected) / 3) < 1e-4, (got, expected)
    assert abs(got - fn(0.0, 0.0, cfg.resolved_beta())) > 1e-3  # the check is not the trivial policy = reference


def test_label_positions_only_scores_fewer_positions_for_the_same_loss(pairs, folders, tmp_path, monkeypatch):
    """Off-GPU, trl's fused LM head projects every position; under ``label_positions_only`` (what
    train_preference runs in) it projects only the completions' positions — and the loss is the same."""
    import trl.trainer.utils as trl_utils

    from itool_core.train.common import label_positions_only

    assert hasattr(trl_utils, "_use_triton"), "trl moved its hook: label_positions_only is a no-op now"
    rows_scored = []
    real = trl_utils._ChunkedLogProbFunction

    class Spy:
        @staticmethod
        def apply(hidden, *args):
            rows_scored.append(hidden.shape[0])
            return real.apply(hidden, *args)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Spy)
    cfg = _tiny_cfg("dpo")
    losses = []
    for compact in (False, True):
        trainer, _, _ = build_trainer(folders["policy"], pairs, cfg, tmp_path, reference=folders["base"])
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        with torch.no_grad(), label_positions_only() if compact else contextlib.nullcontext():
            losses.append(float(trainer.compute_loss(trainer.model, batch)))
    labelled = int((batch["completion_mask"][:, 1:] != 0).sum()) if "completion_mask" in batch else None
    half = len(rows_scored) // 2
    assert sum(rows_scored[half:]) < sum(rows_scored[:half]) / 2, rows_scored  # policy + reference forwards
    if labelled is not None:
        assert rows_scored[half] <= labelled
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert trl_utils._use_triton(torch.device("cpu")) is False  # restored after the block


# ------------------------------------------------------------------------------ the reference model


def _mean_sum_logps(model, rows, side):
    return sum(sum(completion_logps(model, r["prompt_ids"], r[f"{side}_ids"])) for r in rows) / len(rows)


@pytest.mark.parametrize("which", ["default", "explicit_base"])
def test_dpo_reference_is_the_previous_policy_unless_told_otherwise(which, pairs, folders, loaded, tmp_path):
    """The reference log-probs trl uses *in the loss*, read back from its step-2 log (after one update, so policy
    ≠ reference): ref = logps/chosen − rewards/chosen / β.  They must equal the ``policy`` folder's, loaded
    independently — and differ from the original base's — unless ``reference=base`` is passed explicitly."""
    cfg = _tiny_cfg("dpo", epochs=2, merge=False)
    rows = prepare_pairs(pairs, folders["tok"].eos_token_id, cfg).rows
    reference = None if which == "default" else folders["base"]
    res = train_preference(folders["policy"], pairs, cfg, tmp_path / "out", reference=reference)
    assert res.merged_dir is None and not (tmp_path / "out" / "merged").exists()
    assert res.reference_mode == ("policy (adapter disabled)" if which == "default" else "explicit ref_model")
    step2 = res.history[1]
    assert step2["step"] == 2
    beta = res.beta
    for side in ("chosen", "rejected"):
        used = step2[f"logps/{side}"] - step2[f"rewards/{side}"] / beta
        policy_ref = _mean_sum_logps(loaded(folders["policy"]), rows, side)
        base_ref = _mean_sum_logps(loaded(folders["base"]), rows, side)
        expected, other = (policy_ref, base_ref) if which == "default" else (base_ref, policy_ref)
        # measured agreement ≈ 3e-6 nats (fp32); the alternatives differ by ≥ 0.27 here
        assert abs(used - expected) < 1e-3, (side, used, expected)
        assert abs(used - other) > 0.1, (side, used, other)
        # and the trained policy itself has moved away from it, so the check above discriminates
        assert abs(step2[f"logps/{side}"] - used) > 0.1


def test_reference_free_losses_ignore_a_reference(pairs, folders, tmp_path):
    with pytest.warns(UserWarning, match="reference-free"):
        trainer, _, info = build_trainer(
            folders["policy"], pairs, _tiny_cfg("simpo"), tmp_path, reference=folders["base"]
        )
    assert info["reference"] is None and getattr(trainer, "ref_model", None) is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # the same folder passed explicitly: still the adapter-disabled policy, no second copy loaded
        trainer, _, info = build_trainer(
            folders["policy"], pairs, _tiny_cfg("dpo"), tmp_path, reference=folders["policy"]
        )
    assert not [w for w in caught if "reference" in str(w.message)]
    assert info["reference_mode"] == "policy (adapter disabled)" and trainer.ref_model is None


def test_orpo_sft_term_covers_the_chosen_step_only(pairs, folders, loaded, tmp_path):
    """trl's ORPO takes its NLL term over prompt + response; ours is over the chosen completion (paper Eq. 6)."""
    trainer, _, _ = build_trainer(folders["policy"], pairs, _tiny_cfg("orpo"), tmp_path)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    with torch.no_grad():
        nll = trainer.concatenated_forward(trainer.model, batch)[4].item()
    # the fresh adapter is zero (LoRA B = 0): the trainer's model computes what the policy folder does
    model = loaded(folders["policy"])
    step_lps, all_lps = [], []
    for chosen_seq, chosen_comp, _, _ in _batch_sequences(batch):
        prompt = list(chosen_seq[: len(chosen_seq) - len(chosen_comp)])
        step_lps += completion_logps(model, prompt, chosen_comp)
        all_lps += completion_logps(model, prompt[:1], list(chosen_seq[1:]))
    with torch.no_grad():
        trl_nll = super(type(trainer), trainer).concatenated_forward(trainer.model, batch)[4].item()
    # measured: both agree with the independent values to ~1e-6; ours and trl's differ by 0.029 here (a random
    # model is almost uniform over the vocabulary, so prompt and step tokens cost about the same)
    assert nll == pytest.approx(-sum(step_lps) / len(step_lps), abs=1e-4)
    assert trl_nll == pytest.approx(-sum(all_lps) / len(all_lps), abs=1e-4)  # what trl alone would have used
    assert abs(nll - trl_nll) > 1e-2


# ------------------------------------------------------------------------------ prefix sharing


@pytest.mark.parametrize("reference", ["policy", "explicit"])
def test_shared_prefix_gives_the_same_loss_and_gradients_on_fewer_tokens(reference, pairs, folders, tmp_path):
    """A pair's two steps in one row with the shared state encoded once (``shared_prefix``, the default) give
    trl's loss and every LoRA gradient as the two unshared rows do — pairs of different prompt lengths in one
    micro-batch (so the packed rows are padded), reference = the policy with its adapter disabled or an
    explicit model — and the forwards run fewer tokens than the rows hold."""
    ref = folders["policy"] if reference == "policy" else folders["base"]
    results = []
    for shared in (False, True):
        torch.manual_seed(0)  # the fresh LoRA's random A matrices
        trainer, _, _ = build_trainer(
            folders["policy"], pairs, _tiny_cfg("dpo", shared_prefix=shared), tmp_path, reference=ref
        )
        assert trainer.shared_prefix is shared
        trainer.model.train()
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        # a nonzero adapter (B starts at 0), so that the reference and the policy differ under both references
        with torch.no_grad():
            for n, p in trainer.model.named_parameters():
                if "lora_B" in n:
                    p.copy_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(n))))
        trainer.tokens_computed = 0
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        results.append((float(loss), grads, trainer.tokens_computed, int(batch["attention_mask"].sum())))
    (loss0, g0, _, rows_tokens), (loss1, g1, computed, _) = results
    assert loss1 == pytest.approx(loss0, abs=1e-5)
    assert abs(loss0 - math.log(2)) > 1e-3  # policy ≠ reference: the log-ratios are not all zero
    assert g0.keys() == g1.keys() and g0
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-4, atol=1e-6, msg=n)
    assert 0 < computed < rows_tokens


def test_pack_pairs_layout_and_fallbacks():
    """Pair i = rows i and i + B; the packed row is x[:-1] | x[-1] a_w | x[-1] a_l, the second branch's
    positions restart where the first began, neither branch sees the other; a batch whose paired rows do not
    share their prompt is not packed."""
    from itool_core.train.losses.shared_prefix import pack_pairs

    ids = torch.tensor([[1, 2, 3, 4, 5], [1, 2, 3, 6, 0]])
    att = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    comp = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 1, 0]])
    p = pack_pairs(ids, att, comp)
    assert p.input_ids.tolist() == [[1, 2, 3, 4, 5, 3, 6]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 4, 2, 3]]
    assert p.shift_labels.tolist() == [[-100, -100, 4, 5, -100, 6, -100]]
    m = p.attention_mask[0, 0]
    assert m[5].tolist() == [True, True, False, False, False, True, False]  # repeated x[-1]: shared part + self
    assert m[4].tolist() == [True, True, True, True, True, False, False]
    assert p.tokens == 7
    other = ids.clone()
    other[1, 0] = 9
    assert pack_pairs(other, att, comp) is None
    assert pack_pairs(ids[:1], att[:1], comp[:1]) is None
