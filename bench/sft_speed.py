"""Speed of the warm-up SFT step (§4.2) on the embedded SmolLM2-135M with the quick profile's settings.

Trains N optimiser steps (default 8) of LoRA SFT through ``itool_core.train.sft.train_sft`` — the same code
path as ``itool warmup`` — on real examples (the default training set: BFCL unused exec/sql + API-Bank
training dialogues, warm-up part of the seeded split, a seeded sample), then prints a table and writes JSON
(``bench/results/sft_speed.json``):

* tokens/s: non-padding prompt + answer tokens through forward and backward per second of training;
* s/step: mean over all steps, and "steady" = excluding the first step (allocator / kernel warm-up);
* peak RSS: the process's high-water mark (``ru_maxrss``) — model, optimiser state and activations;
* a yardstick (one bf16 forward of 4 × 512 tokens) and the load average, because the CPU is shared and a busy
  machine inflates every time above by the same factor.

docs/design.md#training-on-cpu: 11–16 s/step for 4 × 420 tokens with bf16 autocast, LoRA r16 all-linear, no dropout.

    .venv/bin/python bench/sft_speed.py --steps 8
    .venv/bin/python bench/sft_speed.py --steps 4 --gradient-checkpointing   # the memory/speed trade-off
    .venv/bin/python bench/sft_speed.py --steps 3 --profile-step 2           # + torch.profiler's top ops of step 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from itool_core.calls import PromptStyle  # noqa: E402
from itool_core.config import profile, with_overrides  # noqa: E402
from itool_core.data.records import Example  # noqa: E402
from itool_core.data.split import split_pool  # noqa: E402
from itool_core.models import DEFAULT_MODEL, bf16_is_fast, load_policy, resolve_bf16  # noqa: E402
from itool_core.train.sft import build_sft_records, train_sft  # noqa: E402


def _training_examples() -> tuple[list[Example], str]:
    try:
        from itool_core.data.loaders import load_default_training_set

        examples, _ = load_default_training_set()
        return examples, "default training set (BFCL unused exec/sql + API-Bank lv3 train)"
    except Exception as e:  # the loaders are optional for this bench: fall back to synthetic calls
        from itool_core.calls import ToolCall

        rng = random.Random(0)
        tools = [
            {
                "name": f"tool_{j}",
                "description": f"Tool number {j} does thing {j}.",
                "parameters": {
                    "type": "dict",
                    "properties": {"x": {"type": "integer"}, "unit": {"type": "string"}},
                    "required": ["x"],
                },
            }
            for j in range(6)
        ]
        out = []
        for i in range(200):
            ts = rng.sample(tools, rng.randint(1, 4))
            target = [ToolCall(t["name"], {"x": rng.randint(0, 99)}) for t in ts[: rng.randint(1, 2)]]
            out.append(
                Example(
                    f"syn{i}",
                    "synthetic",
                    "synthetic",
                    ts,
                    [{"role": "user", "content": f"Please run {target[0].name} on {target[0].arguments['x']}."}],
                    target,
                )
            )
        return out, f"synthetic tool calls (loaders unavailable: {type(e).__name__})"


def _cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; ``platform.processor()`` elsewhere)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.processor())


def _calibrate(model, bf16: bool) -> float:
    """Seconds of one no-grad forward of 4 × 512 random tokens (bf16 autocast when ``bf16``): a yardstick of how
    busy the shared CPU is (docs/design.md#speed-facts: 8 × 512 in 3.0 s bf16 on an idle AMX machine, ≈ 1.5 s
    for 4 × 512)."""
    x = torch.randint(0, model.config.vocab_size, (4, 512), generator=torch.Generator().manual_seed(0))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        model(input_ids=x[:1, :16])  # warm-up
        t0 = time.perf_counter()
        model(input_ids=x)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None, help="per-device batch (default: quick profile's)")
    ap.add_argument("--max-length", type=int, default=None)
    ap.add_argument(
        "--no-bf16", action="store_true", help="fp32 even where bf16 is native (default: the profile's bf16='auto')"
    )
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--tools", choices=["json", "compact"], default=None, help="tool rendering (default: profile's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-calibrate", action="store_true", help="skip the 4 × 512 forward yardstick")
    ap.add_argument(
        "--profile-step", type=int, default=0, help="print torch.profiler's top CPU ops of this step (1-based; 0: off)"
    )
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sft_speed.json"))
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    run = profile("quick")
    changes = {"max_steps_per_stage": args.steps, "merge": False, "logging_steps": 1}
    if args.batch:
        changes["per_device_batch_size"] = args.batch
    if args.max_length:
        changes["max_length"] = args.max_length
    if args.no_bf16:
        changes["bf16"] = False
    if args.gradient_checkpointing:
        changes["gradient_checkpointing"] = True
    sft = {f"sft.{k}": v for k, v in changes.items()}
    if args.tools:
        # the buffer's rendering must match the training's: RunConfig checks it
        sft.update({"sft.tools_style": args.tools, "buffer.tools_style": args.tools})
    cfg = with_overrides(run, sft).sft

    examples, source = _training_examples()
    warmup, _ = split_pool(examples, run.split)
    n_needed = args.steps * cfg.per_device_batch_size * cfg.grad_accum_steps
    sample = random.Random(args.seed).sample(warmup, min(len(warmup), n_needed))

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    model, tok = load_policy(args.model, dtype=cfg.model_dtype)
    load_s = time.perf_counter() - t0
    use_bf16 = resolve_bf16(cfg.bf16)
    calib = None if args.no_calibrate else _calibrate(model, use_bf16)
    records, dropped = build_sft_records(sample, tok, PromptStyle(cfg.tools_style), cfg.max_length)
    lengths = [len(r["input_ids"]) for r in records]
    answer = [sum(r["completion_mask"]) for r in records]

    stamps: list[float] = []
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])

    def on_event(event: str, m: dict) -> None:
        # with logging_steps=1 a "log" event ends each step: profile from the end of step k-1 to the end of step k
        if event in ("stage_start", "log"):
            stamps.append(time.perf_counter())
            if args.profile_step and len(stamps) == args.profile_step:
                prof.__enter__()
            elif args.profile_step and len(stamps) == args.profile_step + 1:
                prof.__exit__(None, None, None)

    with tempfile.TemporaryDirectory(prefix="sft_speed.") as tmp:
        result = train_sft(model, [("bench", sample)], cfg, tmp, on_event, tokenizer=tok)
    st = result.stages[0]
    # stamps[0] is the stage start (before trl's tokenisation); step i ends at stamps[i]
    step_s = [b - a for a, b in zip(stamps[1:], stamps[2:])]
    steady = statistics.mean(step_s) if step_s else st.s_per_step

    row = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}",
        "model": args.model,
        "data": source,
        "steps": st.steps,
        "examples": st.n_examples,
        "dropped_too_long": len(dropped),
        "batch": cfg.per_device_batch_size,
        "grad_accum": cfg.grad_accum_steps,
        "tokens_per_example_mean": statistics.mean(lengths),
        "answer_tokens_mean": statistics.mean(answer),
        "bf16": use_bf16,
        "cpu_native_bf16": bf16_is_fast("cpu"),
        "cpu_model": _cpu_model(),
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout, "target": cfg.target_modules},
        "tools_style": cfg.tools_style,
        "load_s": load_s,
        "train_wall_s": st.wall_s,
        "tokens": st.tokens,
        "tokens_per_s": st.tokens_per_s,
        "s_per_step": st.s_per_step,
        "s_per_step_steady": steady,
        "first_loss": st.first_loss,
        "last_loss": st.last_loss,
        "peak_rss_gb": st.peak_rss_mb / 1024,
        "calibration_fwd_4x512_s": calib,
        # the CPU is shared: a 1-minute load average above the thread count means these numbers are inflated
        "loadavg_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    print(f"SFT speed — {args.model}, {row['data']}")
    print(
        f"{st.steps} steps × batch {cfg.per_device_batch_size} (mean {row['tokens_per_example_mean']:.0f} tokens, "
        f"answer {row['answer_tokens_mean']:.0f}), bf16={use_bf16}, checkpointing={cfg.gradient_checkpointing}, "
        f"LoRA r{cfg.lora_r} {cfg.target_modules}, {torch.get_num_threads()} threads"
    )
    print(f"{'tokens/s':>9} {'s/step':>7} {'steady':>7} {'wall s':>7} {'peak RSS GB':>12} {'loss first→last':>16}")
    print(
        f"{row['tokens_per_s']:>9.0f} {row['s_per_step']:>7.1f} {steady:>7.1f} {st.wall_s:>7.0f} "
        f"{row['peak_rss_gb']:>12.2f} {st.first_loss:>7.3f}→{st.last_loss:<7.3f}"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2) + "\n")
    if calib is not None:
        print(
            f"yardstick: {'bf16' if use_bf16 else 'fp32'} forward 4 × 512 tokens {calib:.1f} s "
            "(bf16 ≈ 1.5 s on the idle AMX machine of docs/design.md#speed-facts)"
        )
    if max(row["loadavg_1min_before_after"]) > torch.get_num_threads() + 0.5:
        print(
            f"note: load average {row['loadavg_1min_before_after']} on a {torch.get_num_threads()}-thread run — "
            "other processes shared the CPU; times are inflated"
        )
    if args.profile_step:
        print(f"\ntorch.profiler, step {args.profile_step} (self CPU time):")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    print(f"→ {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
