"""This machine's matmul peak in torch, bf16 and fp32: the yardstick a training stage's achieved FLOP/s is read
against (bench/pipeline_run.py records both in ``machine``).  Square matmuls of ``--n`` (default 2048), best of
a few timed repeats after a warm-up; FLOP = 2n³ per matmul.

    python bench/matmul_peak.py [--n 2048] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time


def matmul_peak(dtype: str = "bfloat16", n: int = 2048, repeats: int = 5, min_s: float = 0.5) -> float:
    """Best FLOP/s of ``n × n`` matmuls in ``dtype`` over ``repeats`` timed rounds of at least ``min_s``."""
    import torch

    dt = getattr(torch, dtype)
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    torch.matmul(a, b)  # warm-up: oneDNN picks and JITs its kernel on the first call
    best = 0.0
    for _ in range(repeats):
        k, t0 = 0, time.perf_counter()
        while True:
            torch.matmul(a, b)
            k += 1
            dt_s = time.perf_counter() - t0
            if dt_s >= min_s:
                break
        best = max(best, 2 * n**3 * k / dt_s)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    out = {d: matmul_peak(d, a.n) for d in ("bfloat16", "float32")}
    print(json.dumps({f"{d}_flop_per_s": round(v) for d, v in out.items()}, indent=1))
    for d, v in out.items():
        print(f"{d}: {v / 1e9:.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
