"""Experiment configs: one YAML file maps 1:1 onto the stage dataclasses; the shipped files equal the profiles."""

from __future__ import annotations

import dataclasses
import os
import re

import pytest

from itool_core.config import (
    CONFIG_DIR,
    PROFILES,
    ConfigError,
    EvalConfig,
    MCTSConfig,
    PolicyConfig,
    PreferenceConfig,
    RunConfig,
    dump_config,
    load_config,
    profile,
    to_dict,
)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_shipped_yaml_files_are_the_profiles(name):
    # regenerate with: itool config --profile NAME -o itool_core/configs/NAME.yaml
    assert load_config(CONFIG_DIR / f"{name}.yaml") == profile(name)
    assert set(to_dict(profile(name))) == {f.name for f in dataclasses.fields(RunConfig)}


def test_every_stage_has_its_section_and_round_trips(tmp_path):
    cfg = profile("quick")
    for section, cls in (
        ("mcts", MCTSConfig),
        ("policy", PolicyConfig),
        ("preference", PreferenceConfig),
        ("evaluation", EvalConfig),
    ):
        assert isinstance(getattr(cfg, section), cls)
    cfg = dataclasses.replace(
        cfg,
        mcts=dataclasses.replace(cfg.mcts, simulations=7, shards=3),
        preference=dataclasses.replace(cfg.preference, loss="ipo", beta=0.3),
        evaluation=dataclasses.replace(cfg.evaluation, limit=None, categories=("multiple",)),
    )
    assert load_config(dump_config(cfg, tmp_path / "x.yaml")) == cfg


def test_a_file_overrides_its_profile_section_by_section(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("profile: paper\nmcts:\n  simulations: 5\npreference:\n  loss: simpo\n")
    cfg = load_config(f)
    assert cfg.mcts.simulations == 5 and cfg.mcts.k == profile("paper").mcts.k
    assert cfg.preference.loss == "simpo" and cfg.preference.gradient_checkpointing  # the paper's, kept
    assert cfg.model == "meta-llama/Llama-3.1-8B-Instruct"


@pytest.mark.parametrize(
    "text, match",
    [
        ("mcts:\n  simulatons: 3\n", "mcts.simulatons"),
        ("mcts:\n  k: 0\n", "mcts.k"),
        ("preference:\n  loss: kto\n", "preference.loss"),
        ("evaluation:\n  limit: many\n", "evaluation.limit"),
        ("policy:\n  top_p: 0\n", "policy.top_p"),
    ],
)
def test_bad_keys_and_values_name_the_key(tmp_path, text, match):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match.replace(".", r"\.")):
        load_config(f)


def test_run_flags_override_the_config(tmp_path):
    import argparse

    from flows.cli import register_run, run_overrides
    from itool_core.config import with_overrides

    p = argparse.ArgumentParser()
    register_run(p.add_subparsers(dest="command"))

    def resolved(*argv):
        a = p.parse_args(["run", *argv])
        over = run_overrides(a)
        return with_overrides(profile(over.get("profile", a.profile)), over)

    cfg = resolved(
        "--iterations",
        "1",
        "--mixed-sft",
        "--loss",
        "orpo",
        "--simulations",
        "2",
        "--k",
        "5",
        "--eval-limit",
        "7",
        "--set",
        "sft.learning_rate=0.0003",
        "--set",
        "evaluation.base=false",
    )
    assert (
        cfg.iterations,
        cfg.sft.mode,
        cfg.preference.loss,
        cfg.mcts.simulations,
        cfg.mcts.k,
        cfg.evaluation.limit,
        cfg.sft.learning_rate,
        cfg.evaluation.base,
    ) == (1, "mixed", "orpo", 2, 5, 7, 3e-4, False)
    assert resolved() == profile("quick")
    assert resolved("--full-eval").evaluation.limit is None
    assert resolved("--no-rl").iterations == 0
    # a file's keys, then the flags on top
    f = tmp_path / "exp.yaml"
    f.write_text("profile: demo\nmcts:\n  k: 4\n")
    cfg = resolved("--config", str(f), "--simulations", "3")
    assert (cfg.profile, cfg.mcts.k, cfg.mcts.simulations) == ("demo", 4, 3)
    # --set after the shorthand of the same key wins; a section mapping sets only its keys
    assert resolved("--simulations", "3", "--set", "mcts.simulations=6").mcts.simulations == 6
    cfg = resolved("--config", str(f), "--set", "mcts={simulations: 5}")
    assert (cfg.mcts.k, cfg.mcts.simulations) == (4, 5)
    a = p.parse_args(["demo"])
    assert a.profile == "demo" and a.func is p.parse_args(["run"]).func


def test_with_overrides_takes_dotted_keys_and_sections_in_order():
    from itool_core.config import with_overrides

    base = profile("quick")
    cfg = with_overrides(base, {"mcts.simulations": 5, "sft": {"mode": "mixed"}, "evaluation.limit": None})
    assert (cfg.mcts.simulations, cfg.mcts.k, cfg.sft.mode, cfg.evaluation.limit) == (5, base.mcts.k, "mixed", None)
    assert cfg.sft.learning_rate == base.sft.learning_rate  # a section mapping keeps the keys it does not name
    # mapping after mapping, the later wins; values are checked as a YAML file's are
    assert with_overrides(base, {"mcts": {"k": 2}}, {"mcts.k": 5}).mcts.k == 5
    assert with_overrides(base, {"sft.learning_rate": "1e-4"}).sft.learning_rate == 1e-4
    assert with_overrides(base, {}) is base
    assert with_overrides(MCTSConfig(), {"simulations": 2}) == MCTSConfig(simulations=2)  # any config dataclass
    for over, match in [
        ({"mcts.simulatons": 3}, "'mcts.simulatons' (did you mean 'mcts.simulations'?"),
        ({"model.name": "x"}, "'model.name': model is a value"),
        ({"mcts.simulations": 0}, "mcts.simulations: 0 must be >= 1"),
        ({"mcts.simulations": "many"}, "mcts.simulations: expected an integer"),
        ({"sft.tools_style": "json"}, "buffer.tools_style"),
        ({"mcts..k": 1}, "not a config key"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(match)):
            with_overrides(base, over)


def test_itool_config_cli_prints_a_loadable_file(tmp_path, capsys):
    from itool_core.cli import main

    assert main(["config", "--profile", "paper"]) == 0
    out = tmp_path / "paper.yaml"
    out.write_text(capsys.readouterr().out)
    assert load_config(out) == profile("paper")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sft:\n  lora_rr: 3\n")
    assert main(["config", "--config", str(bad)]) == 2
    assert "sft.lora_rr" in capsys.readouterr().err


def test_bf16_switches_accept_auto_and_resolve_from_the_device():
    from itool_core.config import BufferConfig, PreferenceConfig, SFTConfig
    from itool_core.models import bf16_is_fast, resolve_bf16

    assert SFTConfig().bf16 == PreferenceConfig().bf16 == BufferConfig().dtype == "auto"
    for bad in ("yes", 1.5):
        with pytest.raises(ConfigError, match="sft.bf16"):
            SFTConfig(bf16=bad)
        with pytest.raises(ConfigError, match="preference.bf16"):
            PreferenceConfig(bf16=bad)
    assert resolve_bf16(True) is True and resolve_bf16(False) is False
    assert resolve_bf16("auto", "cpu") == bf16_is_fast("cpu")
    # "auto" must agree with the CPU's own flags (emulated bf16 made an SFT step ~10x slower on an AVX2 CPU)
    flags = open("/proc/cpuinfo").read().split() if os.path.exists("/proc/cpuinfo") else None
    if flags is not None:
        assert bf16_is_fast("cpu") == ("amx_bf16" in flags or "avx512_bf16" in flags)


def test_fingerprints_name_the_precision_that_runs():
    # "auto" is resolved before stages hash their config: an "auto" run on this machine and a run that spells
    # out the precision "auto" picks here share their stages; the other explicit choice does not.
    from dataclasses import replace

    from itool_core.artifacts import fingerprint
    from itool_core.models import bf16_is_fast, with_concrete_precision

    auto = profile("quick")
    fast = bf16_is_fast("cpu")
    spelled = replace(
        auto,
        sft=replace(auto.sft, bf16=fast),
        preference=replace(auto.preference, bf16=fast),
        buffer=replace(auto.buffer, dtype="bfloat16" if fast else "float32"),
    )
    other = replace(auto, sft=replace(auto.sft, bf16=not fast))
    c_auto, c_spelled, c_other = map(with_concrete_precision, (auto, spelled, other))
    assert c_auto.sft.bf16 is fast and c_auto.preference.bf16 is fast
    assert c_auto.buffer.dtype in ("bfloat16", "float32")
    assert fingerprint("warmup", c_auto.sft) == fingerprint("warmup", c_spelled.sft)
    assert fingerprint("warmup", c_auto.sft) != fingerprint("warmup", c_other.sft)
    assert c_auto == c_spelled and with_concrete_precision(c_auto) == c_auto
