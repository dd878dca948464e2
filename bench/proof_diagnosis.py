"""Why the iterations did (or did not) beat SFT and the control: the diagnosis the proof run's page gives.

Reads a finished run folder (``flow_summary.json`` and the stage folders under it; ``pipeline_run.py --workdir
W`` leaves it at ``W/run``) and writes ``bench/results/<profile>_diagnosis.json`` (``docs/RESULTS.md`` shows it
under the profile's section; bench/results_page.py):

* **pairs** mined per iteration (§4.3 of the paper: best vs worst sibling step of the MCTS tree) and their value
  gap — Q(chosen) − Q(rejected), the Q = r + γV of the search — with the share of pairs whose chosen / rejected
  step is a "no call" answer (text, not a call list);
* the **DPO update** of each iteration as the trainer logged it on its own pairs (mean reward margin and pair
  accuracy over the logged steps);
* **held-out pair accuracy**: the implicit reward of update i, r = β·[log π_i(y) − log π_ref(y)] with π_ref the
  previous policy (Eq. 11), on the pairs update i did *not* train on (the other iterations' pairs), and on its
  own pairs for comparison: accuracy = share of pairs with r(chosen) > r(rejected), and the mean margin.  The
  compute-matched control is scored the same way against its start (the SFT policy): does plain SFT move the
  same preferences?
* **answer kinds** per stage and category (call / no call / broken call list, from each evaluation's summary):
  which categories moved, and whether through the call / no-call decision or through the calls themselves.

    python bench/proof_diagnosis.py --run-dir ~/itool-proof/run
    python bench/proof_diagnosis.py --run-dir ~/itool-proof/run --no-heldout   # no model forwards (seconds)

Log-probabilities are computed in bf16 autocast where the CPU does bf16 natively (the trainers' precision), one
prompt forward per pair shared by its two completions (KV cache), after the same tokenisation and common-prefix
trimming the preference update used (``prepare_pairs``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"


def _newest(paths: list[Path]) -> Path | None:
    return max(paths, key=lambda p: p.stat().st_mtime, default=None)


def _is_call(text: str) -> bool:
    return text.lstrip().startswith("[")


def stages(run_dir: Path) -> list[dict]:
    """One entry per evaluated stage: its label and evaluation summary (from flow_summary.json)."""
    flow = json.loads((run_dir / "flow_summary.json").read_text())
    return [{"label": r["label"], "summary": r["summary"]} for r in flow["rows"]]


def iterations(run_dir: Path, rows: list[dict]) -> list[dict]:
    """Per iTool iteration: its merged policy, the reference its update was anchored to, its pairs table and the
    update's own result (``iter_i/preference/<key>/preference_result.json``; the newest where a changed input
    left several)."""
    out = []
    for r in rows:
        if not r["label"].startswith("iTool iteration"):
            continue
        i = int(r["label"].rsplit(" ", 1)[1])
        result_file = _newest(list((run_dir / f"iter_{i}" / "preference").glob("*/preference_result.json")))
        pairs = _newest(list((run_dir / f"iter_{i}" / "mine" / "pairs").glob("*/pairs.parquet")))
        if result_file is None or pairs is None:
            raise SystemExit(f"{run_dir}: iteration {i} has no preference_result.json or pairs.parquet")
        result = json.loads(result_file.read_text())
        out.append(
            {
                "iteration": i,
                "policy": str(result_file.parent / "merged"),
                "reference": result["reference"],
                "pairs": pairs,
                "result": result,
            }
        )
    return out


def pair_stats(path: Path) -> dict:
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["q_chosen", "q_rejected", "chosen", "rejected", "chosen_terminal", "depth"])
    rows = t.to_pylist()
    gaps = [r["q_chosen"] - r["q_rejected"] for r in rows]
    n = len(rows)
    return {
        "path": str(path),
        "n": n,
        "q_chosen_mean": statistics.fmean(r["q_chosen"] for r in rows) if n else None,
        "q_rejected_mean": statistics.fmean(r["q_rejected"] for r in rows) if n else None,
        "q_gap_mean": statistics.fmean(gaps) if n else None,
        "q_gap_median": statistics.median(gaps) if n else None,
        "q_gap_min": min(gaps) if n else None,
        "chosen_no_call": sum(not _is_call(r["chosen"]) for r in rows),
        "rejected_no_call": sum(not _is_call(r["rejected"]) for r in rows),
        "chosen_terminal": sum(bool(r["chosen_terminal"]) for r in rows),
        "first_step": sum(r["depth"] == 0 for r in rows),
    }


class LogProbs:
    """Summed completion log-probs of a pair's two completions under one model (:func:`heldout` caches them)."""

    def __init__(self, folder: str, bf16: bool):
        from itool_core.models import load_policy

        self.model, _ = load_policy(folder, dtype="float32")
        self.model.eval()
        self.bf16 = bf16

    def pair(self, prompt: list[int], chosen: list[int], rejected: list[int]) -> tuple[float, float]:
        import torch

        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with torch.no_grad(), autocast:
            out = self.model(input_ids=torch.tensor([prompt]), use_cache=True)
            last = out.logits[0, -1].float()
            res = []
            for comp, cache in ((chosen, copy.deepcopy(out.past_key_values)), (rejected, out.past_key_values)):
                o = self.model(input_ids=torch.tensor([comp]), past_key_values=cache, use_cache=True)
                # the first completion token is predicted by the prompt's last position
                logits = torch.cat([last[None], o.logits[0, :-1].float()])
                lp = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(comp)[:, None]).sum()
                res.append(float(lp))
        return res[0], res[1]


def heldout(its: list[dict], control: Path | None, sft_model: str, pref_cfg, bf16: bool) -> list[dict]:
    """Implicit-reward accuracy and margin of every update (and the control) on every iteration's pairs."""
    from itool_core.models import load_tokenizer
    from itool_core.train.preference import load_pairs, prepare_pairs

    tok = load_tokenizer(sft_model)
    sets = {it["iteration"]: prepare_pairs(load_pairs(it["pairs"]), tok.eos_token_id, pref_cfg).rows for it in its}
    updates = [
        (f"iteration {it['iteration']}", it["policy"], it["reference"], it["iteration"], it["result"]["beta"])
        for it in its
    ]
    if control is not None:  # the control has no β of its own: the iterations' puts its margins on their scale
        updates.append(("control", str(control), sft_model, None, its[0]["result"]["beta"]))
    cache: dict[tuple[str, int], list[tuple[float, float]]] = {}

    def logps(model: str, j: int) -> list[tuple[float, float]]:
        # one folder may be named two ways (an update's policy, the next update's reference): load it once
        model = str(Path(model).resolve())
        if (model, j) not in cache:
            lp = LogProbs(model, bf16)
            for k in list(sets):  # one load per model: score every set now
                cache[(model, k)] = [lp.pair(r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]) for r in sets[k]]
            del lp
        return cache[(model, j)]

    out = []
    for name, policy, reference, own, beta in updates:
        for j, rows in sets.items():
            if not rows:
                continue
            pol, ref = logps(policy, j), logps(reference, j)
            margins = [beta * ((pc - rc) - (pr - rr)) for (pc, pr), (rc, rr) in zip(pol, ref)]
            out.append(
                {
                    "update": name,
                    "pairs_of": f"iteration {j}",
                    "held_out": own != j,
                    "n": len(margins),
                    "accuracy": sum(m > 0 for m in margins) / len(margins),
                    "margin_mean": statistics.fmean(margins),
                    "margin_median": statistics.median(margins),
                }
            )
    return out


def answer_kinds(rows: list[dict]) -> dict:
    return {r["label"]: r["summary"].get("bfcl", {}).get("answer_kinds", {}) for r in rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", required=True, type=Path, help="the run folder (flow_summary.json inside)")
    ap.add_argument("--no-heldout", action="store_true", help="skip the log-prob forwards (held-out accuracy)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="default bench/results/<profile>_diagnosis.json")
    a = ap.parse_args(argv)

    import torch

    from itool_core.artifacts import atomic_write_json
    from itool_core.config import load_config
    from itool_core.models import bf16_is_fast

    torch.set_num_threads(a.threads)
    run_dir = a.run_dir.expanduser().resolve()
    if not (run_dir / "flow_summary.json").is_file():
        ap.error(f"--run-dir {str(a.run_dir)!r}: no flow_summary.json (not a finished run folder)")
    cfg = load_config(run_dir / "config.yaml")
    rows = stages(run_dir)
    its = iterations(run_dir, rows)
    sft_model = its[0]["result"]["policy"] if its else None  # iteration 1 starts from the warm-up's policy
    control = _newest(list((run_dir / "control").glob("*/merged")))

    t0 = time.perf_counter()
    bf16 = bf16_is_fast("cpu")
    held = [] if a.no_heldout or not its else heldout(its, control, sft_model, cfg.preference, bf16)
    report = {
        "bench": "proof_diagnosis",
        "command": "python bench/proof_diagnosis.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": date.today().isoformat(),
        "run_dir": str(run_dir),
        "profile": cfg.profile,
        "logprob_precision": "bf16 autocast" if bf16 else "float32",
        "seconds": round(time.perf_counter() - t0, 1),
        "iterations": [
            {
                "iteration": it["iteration"],
                "pairs": pair_stats(it["pairs"]),
                "update": {
                    "loss": it["result"]["loss"],
                    "beta": it["result"]["beta"],
                    "steps": it["result"]["steps"],
                    "train_loss": it["result"]["train_loss"],
                    "margin_mean": it["result"]["metrics"].get("rewards/margins"),
                    "accuracy_mean": it["result"]["metrics"].get("rewards/accuracies"),
                    "margin_last": it["result"]["last"].get("rewards/margins"),
                },
            }
            for it in its
        ],
        "heldout": held,
        "answer_kinds": answer_kinds(rows),
    }
    out = a.out or RESULTS / f"{cfg.profile}_diagnosis.json"
    atomic_write_json(out, report)

    print(f"proof diagnosis — {run_dir}")
    print(
        f"{'iter':>4} {'pairs':>5} {'Q gap mean':>10} {'median':>7} {'chosen no-call':>14} "
        f"{'DPO margin':>10} {'acc':>5}"
    )
    for it in report["iterations"]:
        p, u = it["pairs"], it["update"]
        print(
            f"{it['iteration']:>4} {p['n']:>5} {p['q_gap_mean']:>10.3f} {p['q_gap_median']:>7.3f} "
            f"{p['chosen_no_call']:>14} {u['margin_mean'] or 0:>10.3f} {u['accuracy_mean'] or 0:>5.2f}"
        )
    if held:
        print(f"\n{'update':<12} {'pairs of':<12} {'held out':>8} {'n':>3} {'accuracy':>8} {'margin':>8}")
        for h in held:
            print(
                f"{h['update']:<12} {h['pairs_of']:<12} {str(h['held_out']):>8} {h['n']:>3} "
                f"{h['accuracy']:>8.2f} {h['margin_mean']:>8.3f}"
            )
    print("\nanswer kinds (call / no call / broken) per stage:")
    for label, kinds in report["answer_kinds"].items():
        print(
            f"  {label:<24} "
            + "  ".join(f"{c} {k['call']}/{k['no_call']}/{k['broken_call']}" for c, k in kinds.items())
        )
    print(f"→ {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
