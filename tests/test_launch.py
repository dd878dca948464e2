"""Training past one device (itool_core/train/launch.py): the warm-up SFT and the DPO update under ``accelerate
launch`` with 2 processes on the CPU (gloo), against the same runs in one process.

What is checked: with the same global batch (4 per step: 4 × 1 process, 2 × 2 processes) the loss curves and
the final adapters agree within a measured tolerance; a rank that raises fails the stage with that rank's
error (bad input: a ValueError, so no retries); a rank killed mid-step fails the stage with its rank and signal,
leaves no artifact under a final name, and the re-run continues from the last checkpoint; the cache key sees
the global batch, not the process count; the launch settings are validated and turned into accelerate configs
accelerate itself reads.

The tolerances (MEASURED, below) come from runs on the 2-core development machine, float32, lr 1e-2: the loss
curves agreed to 1e-6 relative and the adapters to 4e-5 absolute (largest weight 0.14): the only difference is
the order of the gradient sum.  Each launched run starts 2 processes that import torch + transformers + trl:
15–40 s each on the shared 2-core machine.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from itool_core.artifacts import write_table
from itool_core.config import ConfigError, LaunchConfig, PreferenceConfig, RunConfig, ServeConfig, SFTConfig, profile
from itool_core.mcts.pairs import PAIRS
from itool_core.models import save_policy, tiny_model
from itool_core.schemas import EXAMPLES
from itool_core.train import launch

sys.path.insert(0, str(Path(__file__).parent))
from test_sft import examples  # noqa: E402  (the SFT tests' synthetic examples)

#: Agreement of a 2-process run with the 1-process run at the same global batch (see the module docstring).
LOSS_RTOL = 1e-4
ADAPTER_ATOL = 1e-3

TWO = LaunchConfig(strategy="ddp", processes_per_machine=2)
SFT = SFTConfig(
    per_device_batch_size=4, learning_rate=1e-2, logging_steps=1, bf16=False, merge=False, checkpoint_steps=0
)
DPO = PreferenceConfig(
    per_device_batch_size=4,
    grad_accum_steps=1,
    max_length=512,
    learning_rate=5e-3,
    lora_r=8,
    lora_alpha=16,
    bf16=False,
    epochs=2,
    merge=False,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("launch")
    model, tok = tiny_model(seed=0)
    base = save_policy(model, tok, root / "base")
    exs = examples(24)
    parts = [
        ("easy", write_table([e.to_row() for e in exs[:8]], root / "easy.parquet", EXAMPLES).path),
        ("hard", write_table([e.to_row() for e in exs[8:]], root / "hard.parquet", EXAMPLES).path),
    ]
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Weather in Paris?"}], tokenize=False, add_generation_prompt=True
    )

    def enc(s):
        return tok(s, add_special_tokens=False)["input_ids"]

    cities = ["Paris", "Rome", "Oslo", "Lima", "Kyiv", "Doha", "Baku", "Riga"]
    rows = [
        {
            "example_id": f"ex{i}",
            "tree_id": f"ex{i}",
            "prompt": prompt,
            "chosen": f"[get_weather(city='{c}')]",
            "rejected": f"[get_time(zone='{c}')]",
            "prompt_ids": enc(prompt),
            "chosen_ids": enc(f"[get_weather(city='{c}')]"),
            "rejected_ids": enc(f"[get_time(zone='{c}')]"),
            "q_chosen": 0.9,
            "q_rejected": -0.5,
            "depth": 0,
            "chosen_terminal": True,
            "rejected_terminal": True,
            "is_final_step": True,
        }
        for i, c in enumerate(cities)
    ]
    pairs = write_table(rows, root / "pairs.parquet", PAIRS).path
    return {"root": root, "base": str(base), "parts": parts, "pairs": pairs}


def _adapter_gap(a: Path, b: Path) -> float:
    x, y = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert x.keys() == y.keys()
    return max(float((x[k] - y[k]).abs().max()) for k in x)


def _logs(events, key="loss"):
    return [m[key] for e, m in events if e == "log" and key in m]


# ------------------------------------------------------------------------------------ config (no training)


def test_launch_config_is_validated_with_the_key_named(tmp_path):
    assert LaunchConfig().in_process and LaunchConfig().world_size() == 1
    assert TWO.world_size() == 2 and not TWO.in_process
    for kw, match in [
        (dict(strategy="horovod"), "launch.strategy"),
        (dict(processes_per_machine=2), "launch.strategy: 'none'"),
        (dict(strategy="ddp", processes_per_machine=0), "launch.processes_per_machine"),
        (dict(strategy="deepspeed", zero_stage=4), "launch.zero_stage"),
        (dict(strategy="ddp", offload="optimizer"), "launch.offload"),
        (dict(strategy="ddp", machines=2, main_process_ip="10.0.0.1"), "launch.hosts"),
        (dict(strategy="ddp", machines=2, hosts=("gpu1",)), "launch.main_process_ip"),
        (dict(strategy="ddp", remote_command="ssh {host}"), "launch.remote_command"),
        (dict(config_file=str(tmp_path / "missing.yaml")), "launch.config_file"),
    ]:
        with pytest.raises(ConfigError, match=match):
            LaunchConfig(**kw)
    with pytest.raises(ConfigError, match="launch.mixed_precision: 'bf16' contradicts sft.bf16"):
        RunConfig(launch=LaunchConfig(mixed_precision="bf16"), sft=SFTConfig(bf16=False))
    # the paper profile: 4 GPUs, data parallel, the global batch of 32 of the one-GPU setting
    paper = profile("paper")
    assert (paper.launch.strategy, paper.launch.world_size()) == ("ddp", 4)
    for c in (paper.sft, paper.preference):
        assert c.per_device_batch_size * c.grad_accum_steps * paper.launch.world_size() == 32


def test_serve_settings_for_tensor_parallel_and_replicas_are_validated():
    s = ServeConfig(server="vllm", tensor_parallel=2, replicas=4)
    assert (s.tensor_parallel, s.replicas) == (2, 4)
    with pytest.raises(ConfigError, match="serve.tensor_parallel"):
        ServeConfig(tensor_parallel=0)
    with pytest.raises(ConfigError, match="vLLM only"):
        ServeConfig(server="llama.cpp", replicas=2)
    with pytest.raises(ConfigError, match="serve.replicas"):
        ServeConfig(server="vllm", replicas=2, url="http://127.0.0.1:8000")


def test_vllm_replicas_get_their_own_gpus_and_the_tensor_parallel_flag(tmp_path):
    from itool_core.engines.serve import VLLMServer, replica_gpus

    tp2 = ServeConfig(server="vllm", tensor_parallel=2, replicas=2)
    assert [replica_gpus(dataclasses.replace(tp2, replica=r), visible="") for r in (0, 1)] == ["0,1", "2,3"]
    assert replica_gpus(dataclasses.replace(tp2, replica=1), visible="4,5,6,7") == "6,7"
    assert replica_gpus(ServeConfig(server="vllm"), visible="3") is None  # one replica: what the process sees
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES lists 2"):
        replica_gpus(tp2, visible="0,1")
    with pytest.raises(ConfigError, match="serve.replica"):
        ServeConfig(server="vllm", replicas=2, replica=2)
    srv = VLLMServer(tmp_path, tensor_parallel=2, gpus="2,3", port=8123, log_path=tmp_path / "v.log")
    i = srv.argv.index("--tensor-parallel-size")
    assert srv.argv[i + 1] == "2" and srv.env == {"CUDA_VISIBLE_DEVICES": "2,3"}
    # the replica serving a shard is not part of the shard's cache key; tensor parallelism is (other numerics)
    from tasks.stages import stage_key

    def key(serve):
        return stage_key("mine", {"serve": serve})

    assert key(dataclasses.replace(tp2, replica=1)) == key(dataclasses.replace(tp2, replicas=1))
    assert key(tp2) != key(dataclasses.replace(tp2, tensor_parallel=1))


@pytest.mark.parametrize(
    "kw, kind",
    [
        (dict(strategy="ddp", processes_per_machine=4), "MULTI_GPU"),
        (dict(strategy="fsdp", processes_per_machine=4), "FSDP"),
        (dict(strategy="deepspeed", processes_per_machine=4, zero_stage=3, offload="optimizer"), "DEEPSPEED"),
        (
            dict(strategy="ddp", processes_per_machine=8, machines=2, main_process_ip="10.0.0.1", hosts=("gpu1",)),
            "MULTI_GPU",
        ),
    ],
)
def test_accelerate_configs_load_in_accelerate(tmp_path, kw, kind):
    """The generated file is what `accelerate launch --config_file` reads: accelerate's own loader accepts it."""
    import yaml
    from accelerate.commands.config.config_args import ClusterConfig

    lc = LaunchConfig(**kw)
    data = launch.accelerate_config(lc, "bf16")
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(data))
    cc = ClusterConfig.from_yaml_file(tmp_path / "a.yaml")
    assert str(cc.distributed_type).endswith(kind)
    assert cc.num_processes == lc.world_size() and cc.num_machines == lc.machines
    if kind == "DEEPSPEED":
        assert cc.deepspeed_config["zero_stage"] == 3 and cc.deepspeed_config["offload_optimizer_device"] == "cpu"
    if lc.machines > 1:
        assert (cc.main_process_ip, cc.main_process_port) == ("10.0.0.1", 29500)
        argv = launch.launch_command(tmp_path / "a.yaml", "sft", tmp_path / "spec.json", machine_rank=1)
        remote = launch.remote_command(lc, "gpu1", argv, {"ITOOL_HOME": "/data/itool", "SECRET": "x"})
        assert remote[:4] == ["ssh", "-o", "BatchMode=yes", "gpu1"] and len(remote) == 5
        assert "--machine_rank 1" in remote[4] and "ITOOL_HOME=/data/itool" in remote[4]
        assert "SECRET" not in remote[4]


def test_cache_key_sees_the_global_batch_not_the_process_count():
    from tasks.stages import stage_key

    def key(per_device: int, lc: LaunchConfig) -> str:
        return stage_key("warmup", {"sft": SFTConfig(per_device_batch_size=per_device), "launch": lc})

    one = key(4, LaunchConfig())
    assert key(2, TWO) == one  # same global batch → same key (and output folder)
    assert key(4, LaunchConfig(strategy="ddp", processes_per_machine=4, zero_stage=1)) == key(16, LaunchConfig())
    assert key(4, TWO) != one  # twice the global batch: another result
    # the default launch section leaves the key of a stage without one as it was
    assert stage_key("warmup", {"sft": SFTConfig(per_device_batch_size=4)}) == one


# ------------------------------------------------------------------------------------------ 2 processes


@pytest.fixture(scope="module")
def sft_two(data):
    """The warm-up on 2 processes, 2 examples each per step (checkpointing every 2 steps, which does not change
    the weights): compared with one process here, and the uninterrupted run of the kill test."""
    events: list = []
    lines: list[str] = []
    res = launch.train_sft(
        data["base"],
        data["parts"],
        dataclasses.replace(SFT, per_device_batch_size=2, checkpoint_steps=2),
        data["root"] / "sft_two",
        TWO,
        callback=lambda e, m: events.append((e, m)),
        log=lines.append,
    )
    return res, events, lines


def test_sft_on_two_processes_matches_one_process(data, sft_two, tmp_path):
    one_ev: list = []
    one = launch.train_sft(
        data["base"], data["parts"], SFT, tmp_path / "one", callback=lambda e, m: one_ev.append((e, m))
    )
    two, two_ev, lines = sft_two
    # the same events reach the callback across the process boundary, once (rank 0's)
    assert [e for e, _ in two_ev] == [e for e, _ in one_ev]
    assert [s.steps for s in two.stages] == [s.steps for s in one.stages] == [2, 4]
    assert _logs(two_ev) == pytest.approx(_logs(one_ev), rel=LOSS_RTOL)
    assert [s.tokens for s in two.stages] == [s.tokens for s in one.stages]
    for a, b in zip(one.stages, two.stages):
        assert _adapter_gap(Path(a.adapter_dir), Path(b.adapter_dir)) < ADAPTER_ATOL
    assert any("2 process(es)" in line for line in lines)  # the launcher's output went to the log
    # rank 0 alone wrote: one result, every stage folder whole, no temporary folder left beside them
    assert sorted(p.name for p in (data["root"] / "sft_two").iterdir()) == [
        ".launch",
        "sft_result.json",
        "stage_1_easy",
        "stage_2_hard",
    ]


def test_dpo_on_two_processes_matches_one_process(data, tmp_path):
    one_ev: list = []
    one = launch.train_preference(
        data["base"], data["pairs"], DPO, tmp_path / "one", callback=lambda e, m: one_ev.append((e, m))
    )
    two_ev: list = []
    two = launch.train_preference(
        data["base"],
        data["pairs"],
        dataclasses.replace(DPO, per_device_batch_size=2),
        tmp_path / "two",
        TWO,
        callback=lambda e, m: two_ev.append((e, m)),
    )
    assert one.steps == two.steps == 4  # 8 pairs, global batch 4, 2 epochs
    assert _logs(two_ev) == pytest.approx(_logs(one_ev), rel=LOSS_RTOL)
    assert _logs(two_ev, "rewards/margins") == pytest.approx(_logs(one_ev, "rewards/margins"), rel=1e-3, abs=1e-6)
    assert two.tokens == one.tokens  # every rank's tokens, summed
    assert _adapter_gap(Path(one.adapter_dir), Path(two.adapter_dir)) < ADAPTER_ATOL


def test_a_failing_rank_fails_the_stage_with_its_error(data, tmp_path):
    bad = write_table([], tmp_path / "empty.parquet", PAIRS).path  # a valid table with no pair in it
    with pytest.raises(launch.LaunchInputError, match=r"rank \d failed: ValueError: no preference pair") as err:
        launch.train_preference(data["base"], bad, DPO, tmp_path / "out", TWO)
    assert isinstance(err.value, ValueError)  # bad input: the task's retry rule fails it at once
    assert "Traceback" in err.value.details
    assert not (tmp_path / "out" / "adapter").exists()


def test_a_killed_rank_fails_cleanly_and_the_rerun_resumes(data, sft_two, tmp_path):
    cfg = dataclasses.replace(SFT, per_device_batch_size=2, checkpoint_steps=2)
    full = sft_two[0]
    out = tmp_path / "run"

    def kill_rank_1(event, m):
        # rank 0 reports step 3 of the hard stage; checkpoint-2 is on disk: kill the other rank mid-stage
        if event == "log" and m["stage"] == "hard" and m["stage_step"] == 3:
            pid = int((out / ".launch" / "rank1.pid").read_text())
            os.kill(pid, signal.SIGKILL)

    with pytest.raises(launch.LaunchError, match="rank 1 was killed by SIGKILL") as err:
        launch.train_sft(data["base"], data["parts"], cfg, out, TWO, callback=kill_rank_1)
    assert not isinstance(err.value, ValueError)  # a crash, not bad input: the task retries it
    # nothing half-written under a final name: the finished stage is whole, the killed one absent
    assert (out / "stage_1_easy" / "stage_result.json").is_file()
    assert not (out / "stage_2_hard").exists() and not (out / "sft_result.json").exists()
    assert (out / ".checkpoints" / "stage_2_hard" / "checkpoint-2" / "trainer_state.json").is_file()

    events: list = []
    res = launch.train_sft(data["base"], data["parts"], cfg, out, TWO, callback=lambda e, m: events.append((e, m)))
    assert [s.resumed for s in res.stages] == [True, False] and res.stages[1].resumed_at_step == 2
    assert [m["stage_step"] for e, m in events if e == "log"] == [3, 4]  # only the missing steps
    gap = _adapter_gap(Path(full.adapter_dir), Path(res.adapter_dir))
    assert gap < ADAPTER_ATOL
    assert not (out / ".checkpoints").exists()
    assert torch.isfinite(torch.tensor(res.stages[1].train_loss))


@pytest.mark.slow
def test_two_machines_on_this_one_match_two_processes(data, sft_two, tmp_path):
    """The multi-machine path end to end: machine 1 is started through ``remote_command`` (here a local shell
    instead of SSH) with ``--machine_rank 1``, and meets machine 0 at ``main_process_ip:port``."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    machines = LaunchConfig(
        strategy="ddp",
        machines=2,
        main_process_ip="127.0.0.1",
        main_process_port=port,
        hosts=("machine-1",),
        remote_command="env ITOOL_TEST_HOST={host} bash -c {command}",
    )
    lines: list[str] = []
    res = launch.train_sft(
        data["base"],
        data["parts"],
        dataclasses.replace(SFT, per_device_batch_size=2, checkpoint_steps=2),
        tmp_path / "machines",
        machines,
        log=lines.append,
    )
    assert any(line.startswith("[machine 1] ") for line in lines)
    assert _adapter_gap(Path(sft_two[0].adapter_dir), Path(res.adapter_dir)) < ADAPTER_ATOL
