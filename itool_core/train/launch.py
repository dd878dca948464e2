"""Training past one device: the warm-up SFT and the preference update under ``accelerate launch``.

The paper trained on 4 × A100, and the field's trainers (trl, LLaMA-Factory, OpenRLHF, verl) scale out with
``accelerate launch``: data parallel (DDP), FSDP, DeepSpeed ZeRO, one machine or several.  The two training
stages of the method (Eq. 2–3 and Eq. 10–11) are trl trainers, which run under it unchanged; this module is
the glue on both sides of the process boundary, with no Prefect in it (a task calls :func:`train_sft` /
:func:`train_preference` and passes its logger's ``info`` as ``log``).

Parent side — :func:`train_sft`, :func:`train_preference`
    With ``launch.strategy == "none"`` (the default) they call the core trainer in this process.  Otherwise
    they write a spec (``<out_dir>/.launch/spec.json``: stage, inputs as file paths, the stage config) and an
    accelerate config file built from :class:`~itool_core.config.LaunchConfig` (:func:`accelerate_config`),
    start ``python -m accelerate.commands.launch --config_file … -m itool_core.train.launch <stage> <spec>``
    (plus, for several machines, the same command on each other host through ``launch.remote_command``), and
    stream its output line by line to ``log``.  Rank 0 prints the trainer's events as ``@@itool-event {json}``
    lines, which go to ``callback`` as in the in-process run; the result is the JSON rank 0 wrote.

Child side — ``python -m itool_core.train.launch <stage> <spec.json>`` (:func:`main`)
    Every rank joins the process group (gloo on CPU, NCCL on GPU), then runs the same core function
    (``sft.train_sft`` / ``preference.train_preference``): the trainers shard each batch over the ranks and
    average the gradients, and only rank 0 writes artifacts, each atomically (train/common.py ``is_main``).

Failure
    A rank that raises writes ``<out_dir>/.launch/error_rank<r>.json`` (its exception and traceback) and
    exits; torchrun then stops the other ranks.  :func:`run_launched` raises :class:`LaunchError` with the
    failing rank's error — :class:`LaunchInputError` (also a ``ValueError``) when it was bad input, so the
    task's retry rule fails it at once — or, for a rank killed by a signal (no error file), the rank and
    signal torchrun reported.  Nothing half-written is left under a final name: every artifact is renamed into
    place when complete, and the warm-up's checkpoints let the re-run continue where the group stopped.

Equivalence
    With the same global batch (``per_device_batch_size × grad_accum_steps × processes``) the launched run
    sees the same examples per optimiser step as one process: accelerate shards each global batch of the one
    seeded sampler over the ranks, and the token-level losses are normalised over the global batch.  What
    differs is the floating-point order of the gradient sum; tests/test_launch.py measures the gap.  Use a data
    size that the global batch divides: accelerate completes a short last batch on the other ranks by
    repeating examples, one process trains it short.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..config import LaunchConfig, PreferenceConfig, SFTConfig

__all__ = [
    "EVENT_PREFIX",
    "LaunchError",
    "LaunchInputError",
    "accelerate_config",
    "launch_command",
    "run_launched",
    "train_sft",
    "train_preference",
    "main",
]

#: Lines rank 0 prints for the parent's callback: ``@@itool-event {"event": ..., "metrics": {...}}``.
EVENT_PREFIX = "@@itool-event "
#: Files of a launched run, under ``<out_dir>/.launch/`` (a dot folder: not an artifact of the stage).
LAUNCH_DIR = ".launch"

Callback = Callable[[str, dict], None]
Log = Callable[[str], None]

# Exceptions that say the input is wrong (the tasks' BAD_INPUT): a launched rank's one of these is re-raised as
# LaunchInputError, a ValueError, so that the stage fails without retries as it would in one process.
_BAD_INPUT = (ValueError, TypeError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError)


class LaunchError(RuntimeError):
    """A launched training run failed: ``rank`` (None if unknown), the rank's exception type and message, and
    its traceback (or the launcher's last output lines)."""

    def __init__(self, message: str, *, rank: int | None = None, exc_type: str | None = None, details: str = ""):
        super().__init__(message)
        self.rank, self.exc_type, self.details = rank, exc_type, details


class LaunchInputError(LaunchError, ValueError):
    """A launched rank failed on bad input (ValueError, KeyError, a missing file ...): retrying cannot help."""


# ------------------------------------------------------------------------------------------- parent side


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def accelerate_config(launch: LaunchConfig, mixed_precision: str) -> dict[str, Any]:
    """The accelerate config file (``accelerate launch --config_file``) for ``launch``, as a mapping.

    ``mixed_precision`` is "no" or "bf16" (the stage's resolved ``bf16``).  Without CUDA a multi-process run
    is "MULTI_GPU" with ``ACCELERATE_USE_CPU`` set in the ranks' environment (:func:`run_launched`): accelerate's
    own CPU mode starts one process unless MPI is installed, while its torchrun launcher starts them all and
    each rank then joins a gloo group on the CPU."""
    n = launch.world_size()
    cfg: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "num_processes": n,
        "num_machines": launch.machines,
        "machine_rank": 0,
        "mixed_precision": mixed_precision,
        "use_cpu": False,
        "gpu_ids": "all",
        "rdzv_backend": "static",
        "same_network": True,
        "main_training_function": "main",
        "downcast_bf16": "no",
        "debug": False,
        "enable_cpu_affinity": False,
        "tpu_env": [],
        "tpu_use_cluster": False,
        "tpu_use_sudo": False,
    }
    if launch.machines > 1:
        cfg["main_process_ip"] = launch.main_process_ip
        cfg["main_process_port"] = launch.main_process_port
    else:
        cfg["main_process_port"] = 0  # a free port: two runs on one machine must not meet on 29500
    if launch.strategy == "deepspeed":
        offload = launch.offload
        cfg["distributed_type"] = "DEEPSPEED"
        cfg["deepspeed_config"] = {
            "zero_stage": launch.zero_stage,
            # transformers fills the batch / accumulation / precision "auto" values from the trainer's args
            "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto",
            "offload_optimizer_device": "cpu" if offload in ("optimizer", "optimizer+params") else "none",
            "offload_param_device": "cpu" if offload == "optimizer+params" else "none",
            "zero3_init_flag": False,  # LoRA: the frozen base is loaded whole, then sharded
            "zero3_save_16bit_model": launch.zero_stage == 3,
        }
        if launch.machines > 1:
            cfg["deepspeed_config"]["deepspeed_multinode_launcher"] = "standard"
    elif launch.strategy == "fsdp":
        cfg["distributed_type"] = "FSDP"
        cfg["fsdp_config"] = {
            "fsdp_version": 2,
            "fsdp_sharding_strategy": launch.fsdp_sharding,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_state_dict_type": "FULL_STATE_DICT",  # rank 0 saves the whole adapter
            "fsdp_offload_params": False,
            "fsdp_cpu_ram_efficient_loading": False,
            "fsdp_use_orig_params": True,  # LoRA: frozen and trainable parameters in one wrapped module
            "fsdp_activation_checkpointing": False,  # the trainers' own gradient_checkpointing decides
        }
    else:
        cfg["distributed_type"] = "MULTI_GPU" if n > 1 else "NO"
    return cfg


def _write_yaml(path: Path, data: dict[str, Any]) -> Path:
    import yaml

    from ..artifacts import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
    return path


def launch_command(
    config_file: str | os.PathLike, stage: str, spec: str | os.PathLike, machine_rank: int = 0
) -> list[str]:
    """``python -m accelerate.commands.launch --config_file F [--machine_rank R] -m itool_core.train.launch
    <stage> <spec>`` (the interpreter running this one, so the ranks see the same environment)."""
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file)]
    if machine_rank:
        argv += ["--machine_rank", str(machine_rank)]
    return argv + ["-m", "itool_core.train.launch", stage, str(spec)]


def remote_command(launch: LaunchConfig, host: str, argv: Sequence[str], env: dict[str, str]) -> list[str]:
    """``launch.remote_command`` for ``host``: ``argv`` run in this working directory with the ``ITOOL_*`` /
    ``ACCELERATE_*`` / Hugging Face settings of ``env`` (a remote shell starts with its own environment)."""
    keep = {k: v for k, v in env.items() if k.startswith(("ITOOL_", "ACCELERATE_", "HF_", "PYTHONPATH"))}
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(keep.items()))
    command = f"cd {shlex.quote(os.getcwd())} && env {exports} {shlex.join(argv)}"
    # the command stays one argument: ssh hands it to the remote shell, "bash -c {command}" runs it here
    return [
        command if part == "{command}" else part.replace("{host}", host) for part in shlex.split(launch.remote_command)
    ]


def _error_files(launch_dir: Path) -> list[dict[str, Any]]:
    errors = []
    for p in sorted(launch_dir.glob("error_rank*.json")):
        try:
            errors.append(json.loads(p.read_text()))
        except (OSError, ValueError):  # a rank killed while writing it: the output tail still tells
            continue
    return sorted(errors, key=lambda e: e.get("time", 0.0))


# torchrun's failure summary: "rank      : 1 (local_rank: 1)" / "exitcode  : -9 (pid: 123)"
_TORCHRUN_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)", re.M)
_TORCHRUN_EXIT = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)", re.M)


def _failure(rc: int, launch_dir: Path, tail: Sequence[str]) -> LaunchError:
    """The error to raise for a launched run that exited with ``rc``: a rank's own exception (the first one
    raised, so not the connection errors it caused in the others) or the rank torchrun saw die."""
    text = "\n".join(tail)
    # torchrun lists every failed rank, the first observed last ("Root Cause"); the ranks it stopped itself
    # (SIGTERM) after that are consequences
    root = text.rsplit("Root Cause", 1)[-1] if "Root Cause" in text else ""
    listed = [(int(r), int(c)) for r, c in zip(_TORCHRUN_RANK.findall(root), _TORCHRUN_EXIT.findall(root))]
    listed += [(int(r), int(c)) for r, c in zip(_TORCHRUN_RANK.findall(text), _TORCHRUN_EXIT.findall(text))]
    # a rank killed by a signal other than torchrun's own SIGTERM wrote nothing: the others' errors are its
    # consequences; a rank torchrun SIGTERMed is itself a consequence, unless no rank left an error file
    killed = [(r, c) for r, c in listed if c < 0 and c != -signal.SIGTERM]
    errors = _error_files(launch_dir)
    if not killed and not errors:
        killed = [(r, c) for r, c in listed if c < 0]
    if killed:
        r, code = killed[0]
        try:
            sig = signal.Signals(-code).name
        except ValueError:
            sig = f"signal {-code}"
        return LaunchError(f"training rank {r} was killed by {sig}", rank=r, exc_type=sig, details=text)
    if errors:
        e = errors[0]
        cls = LaunchInputError if e.get("bad_input") else LaunchError
        return cls(
            f"training rank {e['rank']} failed: {e['type']}: {e['message']}",
            rank=e["rank"],
            exc_type=e["type"],
            details=e.get("traceback", ""),
        )
    return LaunchError(f"accelerate launch exited with code {rc}; last output:\n{text}", details=text)


def run_launched(
    stage: str,
    spec: dict[str, Any],
    launch: LaunchConfig,
    out_dir: str | os.PathLike,
    *,
    mixed_precision: str = "no",
    callback: Callback | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Run ``stage`` ("sft" or "preference") with ``spec`` under ``accelerate launch`` as ``launch`` says;
    return the result rank 0 wrote.  Output lines go to ``log``, rank 0's events to ``callback``; a failed rank
    raises :class:`LaunchError` (see the module docstring).  ``out_dir`` is the stage's output folder."""
    emit = callback or (lambda event, metrics: None)
    say = log or (lambda line: None)
    launch_dir = Path(out_dir) / LAUNCH_DIR
    launch_dir.mkdir(parents=True, exist_ok=True)
    for old in launch_dir.glob("error_rank*.json"):
        old.unlink()
    from ..artifacts import atomic_write_json

    spec = {**spec, "stage": stage, "out_dir": str(out_dir), "launch_dir": str(launch_dir)}
    spec_path = launch_dir / "spec.json"
    atomic_write_json(spec_path, spec)
    cuda = _has_cuda()
    if not cuda and launch.config_file is None and launch.strategy in ("fsdp", "deepspeed"):
        raise ValueError(
            f"launch.strategy: {launch.strategy!r} needs CUDA GPUs (none here); 'ddp' also runs on the CPU"
        )
    if launch.config_file is not None:
        config_file = Path(os.path.expanduser(launch.config_file))
    else:
        config_file = _write_yaml(launch_dir / "accelerate.yaml", accelerate_config(launch, mixed_precision))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if not cuda:
        env["ACCELERATE_USE_CPU"] = "true"  # the ranks join a gloo group on the CPU (accelerate_config)
    # the ranks import this checkout's itool_core, also when it is not installed (a test run from a clone)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])

    cmds = [launch_command(config_file, stage, spec_path)]
    for i, host in enumerate(launch.hosts, start=1):
        cmds.append(remote_command(launch, host, launch_command(config_file, stage, spec_path, machine_rank=i), env))
    say(
        f"[launch] {stage}: {launch.world_size()} process(es) on {launch.machines} machine(s), strategy "
        f"{launch.strategy if launch.config_file is None else launch.config_file}"
    )
    procs = [
        subprocess.Popen(
            c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env, start_new_session=True
        )
        for c in cmds
    ]
    tail: list[str] = []
    lock = threading.Lock()

    def pump(p: subprocess.Popen, prefix: str) -> None:
        assert p.stdout is not None
        for line in p.stdout:
            line = line.rstrip("\n")
            with lock:
                tail.append(prefix + line)
                del tail[:-200]
            if not line.startswith(EVENT_PREFIX):
                say(prefix + line)

    # the other machines' output only goes to the log; machine 0's events are read in this thread, so that a
    # callback runs where the caller called (and an exception from it stops the run)
    readers = [threading.Thread(target=pump, args=(p, f"[machine {i}] "), daemon=True) for i, p in enumerate(procs)][1:]
    for t in readers:
        t.start()
    try:
        assert procs[0].stdout is not None
        for line in procs[0].stdout:
            line = line.rstrip("\n")
            if line.startswith(EVENT_PREFIX):
                rec = json.loads(line[len(EVENT_PREFIX) :])
                emit(rec["event"], rec["metrics"])
                continue
            with lock:
                tail.append(line)
                del tail[:-200]
            say(line)
        rcs = [p.wait() for p in procs]
    except BaseException:
        for p in procs:
            _stop(p)
        raise
    finally:
        for t in readers:
            t.join(timeout=10)
    rc = next((c for c in rcs if c != 0), 0)
    if rc != 0:
        raise _failure(rc, launch_dir, tail)
    result = Path(spec["result"])
    if not result.is_file():
        raise LaunchError(f"the launched {stage} run exited 0 but wrote no {result}")
    return json.loads(result.read_text())


def _stop(p: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop a launcher and its ranks (its own session): SIGTERM, then SIGKILL."""
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def _precision(bf16: bool | str, launch: LaunchConfig) -> str:
    if launch.mixed_precision != "auto":
        return launch.mixed_precision
    from ..models import resolve_bf16

    return "bf16" if resolve_bf16(bf16) else "no"


def train_sft(
    model: str | os.PathLike,
    parts: Sequence[tuple[str, str | os.PathLike]],
    cfg: SFTConfig,
    out_dir: str | os.PathLike,
    launch: LaunchConfig = LaunchConfig(),
    *,
    callback: Callback | None = None,
    log: Log | None = None,
    resume: bool = True,
):
    """The warm-up (``sft.train_sft``) on the ``(stage name, examples Parquet)`` parts, in this process or
    launched as ``launch`` says; returns its :class:`~itool_core.train.sft.SFTResult` (without the model when
    launched)."""
    from . import sft

    if launch.in_process:
        stages = [(name, _read_examples(path)) for name, path in parts]
        return sft.train_sft(str(model), stages, cfg, out_dir, callback, resume=resume)
    spec = {
        "model": str(model),
        "parts": [[name, str(path)] for name, path in parts],
        "config": asdict(cfg),
        "resume": resume,
        "result": str(Path(out_dir) / "sft_result.json"),
    }
    res = run_launched(
        "sft", spec, launch, out_dir, mixed_precision=_precision(cfg.bf16, launch), callback=callback, log=log
    )
    return sft.SFTResult.from_dict(res)


def train_preference(
    policy: str | os.PathLike,
    pairs: str | os.PathLike,
    cfg: PreferenceConfig,
    out_dir: str | os.PathLike,
    launch: LaunchConfig = LaunchConfig(),
    *,
    reference: str | os.PathLike | None = None,
    callback: Callback | None = None,
    log: Log | None = None,
):
    """The preference update (``preference.train_preference``) on a PAIRS Parquet file, in this process or
    launched as ``launch`` says; returns its :class:`~itool_core.train.preference.PreferenceResult`."""
    from . import preference

    if launch.in_process:
        return preference.train_preference(policy, pairs, cfg, out_dir, reference=reference, callback=callback)
    spec = {
        "policy": str(policy),
        "pairs": str(pairs),
        "reference": None if reference is None else str(reference),
        "config": asdict(cfg),
        "result": str(Path(out_dir) / "preference_result.json"),
    }
    res = run_launched(
        "preference", spec, launch, out_dir, mixed_precision=_precision(cfg.bf16, launch), callback=callback, log=log
    )
    return preference.PreferenceResult.from_dict(res)


def _read_examples(path: str | os.PathLike) -> list:
    from ..artifacts import read_table
    from ..data.records import Example
    from ..schemas import EXAMPLES

    return [Example.from_row(r) for r in read_table(path, EXAMPLES).to_pylist()]


# -------------------------------------------------------------------------------------------- child side


def _config(cls: type, data: dict[str, Any]) -> Any:
    from ..dataclass_io import from_dict

    return from_dict(cls, data)


def _run_stage(stage: str, spec: dict[str, Any], emit: Callback) -> None:
    if stage == "sft":
        from . import sft

        parts = [(name, _read_examples(path)) for name, path in spec["parts"]]
        sft.train_sft(
            spec["model"], parts, _config(SFTConfig, spec["config"]), spec["out_dir"], emit, resume=spec["resume"]
        )
    elif stage == "preference":
        from . import preference

        preference.train_preference(
            spec["policy"],
            spec["pairs"],
            _config(PreferenceConfig, spec["config"]),
            spec["out_dir"],
            reference=spec["reference"],
            callback=emit,
        )
    else:
        raise ValueError(f"itool_core.train.launch: unknown stage {stage!r} (known: sft, preference)")


def main(argv: Sequence[str] | None = None) -> int:
    """One rank: ``python -m itool_core.train.launch <stage> <spec.json>`` (started by ``accelerate launch``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m itool_core.train.launch {sft,preference} SPEC.json", file=sys.stderr)
        return 2
    stage, spec_path = args
    spec = json.loads(Path(spec_path).read_text())
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # join the group before the trainer does, so that the core's rank questions (train/common.py) are answered
    # from the first line on; on CPU with gloo (ACCELERATE_USE_CPU, set by run_launched without CUDA)
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    rank = state.process_index
    launch_dir = Path(spec["launch_dir"])
    (launch_dir / f"rank{rank}.pid").write_text(str(os.getpid()))

    def emit(event: str, metrics: dict) -> None:
        if rank == 0:  # one copy of each event: rank 0's (the logged losses are already means over the ranks)
            print(EVENT_PREFIX + json.dumps({"event": event, "metrics": metrics}, default=str), flush=True)

    try:
        _run_stage(stage, spec, emit)
    except BaseException as e:
        from ..artifacts import atomic_write_json

        atomic_write_json(
            launch_dir / f"error_rank{rank}.json",
            {
                "rank": rank,
                "type": type(e).__name__,
                "message": str(e),
                "bad_input": isinstance(e, _BAD_INPUT),
                "traceback": traceback.format_exc(),
                "time": time.time(),
            },
        )
        raise
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
