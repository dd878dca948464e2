"""``itool inspect``: a first look without training — the model, the data statistics, one BFCL answer."""

from __future__ import annotations

import argparse
import time


def _cmd_inspect(args: argparse.Namespace) -> int:
    import torch

    from ..calls import render_prompt, try_parse_calls
    from ..data.loaders import load, load_default_training_set
    from ..data.stats import format_stats, table_stats
    from ..models import load_policy

    torch.set_num_threads(args.threads)
    t0 = time.time()
    model, tok = load_policy(args.model)
    print(
        f"[inspect] model {args.model} loaded in {time.time() - t0:.1f}s "
        f"({sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters)"
    )

    train, reports = load_default_training_set(args.apibank_dir)
    for r in reports:
        print("[inspect] " + r.summary())
    print("[inspect] default training set (BFCL unused sets + API-Bank training set):")
    print(format_stats(table_stats(train, tok, max_length=tok.model_max_length)))

    bfcl, _ = load("bfcl")
    print("[inspect] BFCL evaluation set:")
    print(format_stats(table_stats(bfcl)))
    for level in (1, 2):
        ab, _ = load("apibank", args.apibank_dir, level=level)
        print(f"[inspect] API-Bank level-{level}: {len(ab)} items")

    ex = next(e for e in bfcl if e.category == "simple_python")
    prompt = render_prompt(tok, ex.tools, ex.messages)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    t0 = time.time()
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=args.max_new_tokens, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    calls, err = try_parse_calls(answer)
    print(f"[inspect] BFCL {ex.id}: {ex.messages[-1]['content']}")
    print(f"[inspect] answer ({time.time() - t0:.1f}s): {answer!r}")
    print(f"[inspect] parsed calls: {[str(c) for c in calls] if calls is not None else f'none ({err})'}")
    print(f"[inspect] expected:     {[str(c) for c in ex.target]}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="load the embedded model and data, print statistics, answer one BFCL question")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--apibank-dir", default=None)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=_cmd_inspect)
