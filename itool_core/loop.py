"""The whole method as one resumable loop (no orchestration inside): data → split → warm-up → N iterations.

Each iteration i (§4.3, Fig. 2 of the paper):

1. refresh the replay buffer's perplexities with the current policy π_{i−1} (Eq. 4);
2. select the hardest α % (tool-call / no-call in proportion; optionally below the top ``buffer.skip_hardest``);
3. mine step-level preference pairs with lock-step MCTS (Eq. 5–9);
4. preference update of π_{i−1} on those pairs with the reference π_{i−1} (Eq. 10–11), merge → π_i;
5. evaluate π_i.

Every stage writes its outputs into its own folder and then an atomic ``done.json`` holding the outputs and
a *fingerprint* (hash of the stage's config and of its inputs' content hashes).  A re-run skips every stage
whose marker matches, so an interrupted run restarts after the last finished stage; change a stage's config
or an input and that stage and everything after it run again.  The Prefect flows wrap the same stage
functions as tasks; this module is what ``itool run`` calls directly.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from .artifacts import (atomic_write_json, fingerprint, read_marker, read_table, sha256_file, sha256_tree,
                        write_marker, write_table)
from .calls import PromptStyle
from .config import EvalConfig
from .data.records import Example
from .schemas import EXAMPLES

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

#: The evaluation's config lives with the other stage configs (``RunConfig.evaluation``); the old name stays.
EvalSpec = EvalConfig


def content_hash(path: str | Path) -> str:
    p = Path(path)
    return sha256_tree(p) if p.is_dir() else sha256_file(p)


class StageRunner:
    """Runs named stages once: outputs + fingerprint in ``<dir>/done.json`` (atomic), skipped when unchanged."""

    def __init__(self, root: str | Path, progress: Progress = print):
        self.root = Path(root)
        self.progress = progress
        self.timings: dict[str, float] = {}
        self.skipped: list[str] = []
        self.ran: list[str] = []

    def __call__(self, name: str, fp: str, fn: Callable[[Path], dict]) -> dict:
        d = self.root / name
        marker = d / "done.json"
        done = read_marker(marker, fp)
        if done is not None:
            self.progress(f"[itool] {name}: done already ({done.get('seconds', 0):.0f}s), skipped")
            self.skipped.append(name)
            self.timings[name] = done.get("seconds", 0.0)
            return done["outputs"]
        d.mkdir(parents=True, exist_ok=True)
        self.progress(f"[itool] {name}: running")
        t0 = time.time()
        outputs = fn(d)
        secs = time.time() - t0
        write_marker(marker, fp, outputs=outputs, seconds=secs)
        self.timings[name] = secs
        self.ran.append(name)
        self.progress(f"[itool] {name}: finished in {secs:.0f}s")
        return outputs


def _read_examples(path: str) -> list[Example]:
    return [Example.from_row(r) for r in read_table(path, EXAMPLES).to_pylist()]


def _evaluate(model_dir: str, spec: EvalSpec, style: PromptStyle, out: Path, label: str, engine: str = "hf") -> dict:
    from .eval.runner import evaluate

    summary = evaluate(model_dir, benchmarks=("bfcl", "apibank"), categories=list(spec.categories),
                       limit=spec.limit, seed=spec.seed, out_dir=out, batch_size=spec.batch_size,
                       max_new_tokens=spec.max_new_tokens, style=style, progress=False, print_tables=False,
                       model_label=label, engine_kind=engine)
    return {"summary": summary, "dir": str(out)}


def run_pipeline(cfg: Any, run_dir: str | Path, *, no_warmup: bool = False, no_rl: bool = False,
                 data_examples: Sequence[Example] | None = None, progress: Progress = print,
                 callback: Callable[[str, dict], None] | None = None) -> dict:
    """Run (or resume) the method end to end; return the summary table rows and stage timings.

    ``cfg`` is a :class:`itool_core.config.RunConfig`: every stage reads its own section of it (``cfg.sft``,
    ``cfg.mcts``, ``cfg.preference``, ``cfg.evaluation`` ...).  ``data_examples`` replaces the configured
    training data (tests).
    """
    import torch

    from .data.replay import REPLAY_BUFFER, buffer_examples, refresh_buffer, select_for_search
    from .data.split import split_and_write
    from .engines import policy_engine
    from .mcts.mine import mine_sharded
    from .models import load_policy, resolve, with_concrete_precision
    from .train.preference import train_preference
    from .train.sft import train_sft

    cfg = with_concrete_precision(cfg)
    mcts, policy_cfg, preference, eval_spec = cfg.mcts, cfg.policy, cfg.preference, cfg.evaluation
    # the generation engine changes greedy outputs slightly, so it is part of an evaluation's key ("hf" adds
    # nothing, which keeps the keys of runs made before the engine was configurable)
    engine_key = () if cfg.engine == "hf" else (cfg.engine,)
    emit = callback or (lambda event, metrics: None)
    style = PromptStyle(cfg.sft.tools_style)
    run_dir = Path(run_dir)
    stage = StageRunner(run_dir, progress)
    rows: list[dict] = []

    # ---- data
    def data_stage(d: Path) -> dict:
        if data_examples is not None:
            exs = list(data_examples)
        elif cfg.data == "default":
            from .data.build import build_training_set

            exs, _card = build_training_set(cfg.profile, seed=cfg.seed)
        elif str(cfg.data).endswith(".parquet"):
            exs = _read_examples(cfg.data)
        else:
            from .data.loaders import load

            exs, _ = load("toolace", cfg.data)
        ref = write_table([e.to_row() for e in exs], d / "train.parquet", EXAMPLES)
        return {"train": ref.path, "sha256": ref.sha256, "rows": ref.rows}

    data_fp = fingerprint("data", cfg.data, cfg.profile, cfg.seed,
                          [e.id for e in data_examples] if data_examples is not None else None)
    data = stage("data", data_fp, data_stage)

    split = stage("split", fingerprint("split", cfg.split, data["sha256"]),
                  lambda d: {k: v.to_dict() for k, v in split_and_write(_read_examples(data["train"]), cfg.split, d).items()})

    base_model = resolve(cfg.model)
    if eval_spec.base:
        ev = stage("eval_base", fingerprint("eval", eval_spec, style, cfg.model, *engine_key),
                   lambda d: _evaluate(base_model, eval_spec, style, d, "base", cfg.engine))
        rows.append({"stage": "base", **ev["summary"]})
        emit("eval", {"stage": "base", "iteration": 0, **ev["summary"]})

    # ---- warm-up (curriculum or mixed SFT)
    policy = base_model
    last_eval = ev if eval_spec.base else None
    if not no_warmup:
        def warmup_stage(d: Path) -> dict:
            parts = [(name, _read_examples(split[name]["path"])) for name in ("easy", "medium", "hard")]
            res = train_sft(base_model, parts, cfg.sft, d, callback=emit)
            return {"merged": res.merged_dir, "adapter": res.adapter_dir,
                    "stages": [asdict(s) for s in res.stages], "merged_sha256": content_hash(res.merged_dir)}

        warm = stage("warmup", fingerprint("warmup", cfg.sft, split["easy"]["sha256"], split["medium"]["sha256"],
                                           split["hard"]["sha256"], cfg.model), warmup_stage)
        policy = warm["merged"]
        policy_hash = warm["merged_sha256"]
        ev = stage("eval_sft", fingerprint("eval", eval_spec, style, policy_hash, *engine_key),
                   lambda d: _evaluate(policy, eval_spec, style, d, f"SFT ({cfg.sft.mode})", cfg.engine))
        rows.append({"stage": f"SFT ({cfg.sft.mode})", **ev["summary"]})
        last_eval = ev
        emit("eval", {"stage": "sft", "iteration": 0, **ev["summary"]})
    else:
        policy_hash = fingerprint("base", cfg.model)

    # ---- iterations
    pool_path, pool_hash = split["pool"]["path"], split["pool"]["sha256"]
    for i in range(1, 0 if no_rl else cfg.iterations + 1):
        it = f"iter_{i}"
        prev, prev_hash = policy, policy_hash

        def buffer_stage(d: Path, prev=prev, i=i) -> dict:
            torch.set_num_threads(2)
            model, tok = load_policy(prev)
            table = refresh_buffer(model, tok, _read_examples(pool_path), cfg.buffer, iteration=i)
            ref = write_table(table, d / "buffer.parquet", REPLAY_BUFFER)
            return {"buffer": ref.path, "sha256": ref.sha256}

        buf = stage(f"{it}/buffer", fingerprint("buffer", cfg.buffer, pool_hash, prev_hash), buffer_stage)

        def mine_stage(d: Path, prev=prev, buf=buf) -> dict:
            chosen = select_for_search(read_table(buf["buffer"], REPLAY_BUFFER), cfg.buffer)
            engine = policy_engine(cfg.engine, prev)
            res = mine_sharded(engine, buffer_examples(chosen), d, mcts, policy_cfg, style)
            return {"pairs": res.pairs.path, "sha256": res.pairs.sha256, "n_pairs": res.n_pairs,
                    "n_trees": res.n_trees, "stats": res.stats}

        mined = stage(f"{it}/mine", fingerprint("mine", mcts, policy_cfg, cfg.buffer, style, buf["sha256"], prev_hash,
                                                *engine_key),
                      mine_stage)
        emit("mine", {"iteration": i, "pairs": mined["n_pairs"], "trees": mined["n_trees"]})

        def pref_stage(d: Path, prev=prev, mined=mined) -> dict:
            if mined["n_pairs"] == 0:
                # nothing to learn from: the policy carries over unchanged (reported, not hidden)
                return {"merged": prev, "merged_sha256": prev_hash, "skipped": "no pairs"}
            res = train_preference(prev, mined["pairs"], preference, d, reference=prev, callback=emit)
            return {"merged": res.merged_dir, "adapter": res.adapter_dir, "train_loss": res.train_loss,
                    "metrics": res.metrics, "merged_sha256": content_hash(res.merged_dir)}

        upd = stage(f"{it}/preference", fingerprint("preference", preference, mined["sha256"], prev_hash), pref_stage)
        policy, policy_hash = upd["merged"], upd["merged_sha256"]
        if policy_hash == prev_hash and last_eval is not None:
            # no pairs → the same weights: their scores are known, an evaluation would only repeat them
            progress(f"[itool] {it}/eval: policy unchanged (no pairs), scores of the previous stage reused")
            ev = last_eval
        else:
            ev = stage(f"{it}/eval", fingerprint("eval", eval_spec, style, policy_hash, *engine_key),
                       lambda d, policy=policy, i=i: _evaluate(policy, eval_spec, style, d, f"iTool iteration {i}",
                                                               cfg.engine))
        last_eval = ev
        rows.append({"stage": f"iTool iteration {i}", "pairs": mined["n_pairs"], **ev["summary"]})
        emit("eval", {"stage": it, "iteration": i, **ev["summary"]})

    result = {"rows": rows, "timings": stage.timings, "ran": stage.ran, "skipped": stage.skipped,
              "final_policy": policy}
    atomic_write_json(run_dir / "run_summary.json", result)
    return result


# ------------------------------------------------------------------------------------------------ table + CLI


def results_table(rows: Sequence[dict]) -> str:
    """base / SFT / iteration 1..N on BFCL (categories + overall) and API-Bank L1/L2, in %."""
    cats: list[str] = []
    for r in rows:
        for c in (r.get("bfcl") or {}).get("categories", {}):
            if c not in cats:
                cats.append(c)
    head = ["stage", "BFCL overall", *cats, "API-Bank L1", "API-Bank L2"]

    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"

    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        b, a = r.get("bfcl") or {}, r.get("apibank") or {}
        cells = [r["stage"], pct(b.get("overall"))]
        cells += [pct(b.get("categories", {}).get(c, {}).get("accuracy")) for c in cats]
        cells += [pct((a.get("level1") or {}).get("accuracy")), pct((a.get("level2") or {}).get("accuracy"))]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def apply_flags(cfg: Any, *, iterations: int | None = None, mixed_sft: bool = False, loss: str | None = None,
                simulations: int | None = None, k: int | None = None, eval_limit: int | None = None,
                full_eval: bool = False) -> Any:
    """The command line's ablation / budget flags as a new :class:`RunConfig` (None = keep the config's value)."""
    from dataclasses import replace

    if iterations is not None:
        cfg = replace(cfg, iterations=iterations)
    if mixed_sft:
        cfg = replace(cfg, sft=replace(cfg.sft, mode="mixed"))
    if loss:
        cfg = replace(cfg, preference=replace(cfg.preference, loss=loss))
    if simulations is not None:
        cfg = replace(cfg, mcts=replace(cfg.mcts, simulations=simulations))
    if k is not None:
        cfg = replace(cfg, mcts=replace(cfg.mcts, k=k))
    if full_eval:
        cfg = replace(cfg, evaluation=replace(cfg.evaluation, limit=None))
    elif eval_limit is not None:
        cfg = replace(cfg, evaluation=replace(cfg.evaluation, limit=eval_limit))
    return cfg


def _cmd_run(args) -> int:
    from .config import dump_config, load_config, profile

    cfg = load_config(args.config) if args.config else profile(args.profile)
    cfg = apply_flags(cfg, iterations=args.iterations, mixed_sft=args.mixed_sft, loss=args.loss,
                      simulations=args.simulations, k=args.k, eval_limit=args.eval_limit, full_eval=args.full_eval)
    run_dir = Path(args.run_dir or f"runs/{cfg.profile}")
    run_dir.mkdir(parents=True, exist_ok=True)
    # the exact configuration of this run, loadable with --config
    dump_config(cfg, run_dir / "config.yaml")
    t0 = time.time()
    res = run_pipeline(cfg, run_dir, no_warmup=args.no_warmup, no_rl=args.no_rl)
    spec = cfg.evaluation
    subset = "full categories" if spec.limit is None else f"{spec.limit} seeded items per category (seed {spec.seed})"
    print(f"\n[itool] done in {time.time() - t0:.0f}s — eval subset: {subset}\n")
    print(results_table(res["rows"]))
    print("\nwall time per stage (s): " + ", ".join(f"{k}={v:.0f}" for k, v in res["timings"].items()))
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("run", help="the whole method: data → split → warm-up → N iterations → evaluation")
    p.add_argument("--profile", default="quick", choices=["quick", "paper"])
    p.add_argument("--config", help="YAML experiment file (maps 1:1 to the stage dataclasses)")
    p.add_argument("--run-dir", help="where every stage's artifacts go (default runs/<profile>); re-run to resume")
    p.add_argument("--iterations", type=int)
    p.add_argument("--no-warmup", action="store_true", help="ablation: skip the curriculum SFT")
    p.add_argument("--no-rl", action="store_true", help="ablation: stop after the warm-up")
    p.add_argument("--mixed-sft", action="store_true", help="ablation: shuffled SFT instead of the curriculum")
    p.add_argument("--loss", choices=["dpo", "simpo", "ipo", "orpo"])
    p.add_argument("--simulations", type=int, help="MCTS rounds per tree (default: the config's mcts.simulations)")
    p.add_argument("--k", type=int, help="candidate steps per expansion (default: the config's mcts.k)")
    p.add_argument("--eval-limit", type=int, help="seeded items per evaluation category (default: the config's)")
    p.add_argument("--full-eval", action="store_true", help="evaluate on the full categories")
    p.set_defaults(func=_cmd_run)
