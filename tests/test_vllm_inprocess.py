"""The in-process vLLM engine (engines/vllm.py) on this CPU, from vLLM's own environment (engines/vllm_env.py).

vLLM cannot be imported in the project's environment here (conflicting pins), so the engine runs in a child
process on the vLLM environment's Python and reports JSON; the transformers engine on the same float32 weights
is the reference.  ~1.5 min for vLLM's start: marked ``slow``.  (On a GPU box with ``pip install .[vllm]`` the
whole contract suite runs on it: ``make test-gpu``.)
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from itool_core.engines import GenerationParams, make_engine
from itool_core.engines.vllm_env import cpu_server_env, vllm_python

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n<|im_start|>assistant\n",
    "Hello",
]
CHILD = """
import json, sys
from itool_core.engines.base import GenerationParams
from itool_core.engines.vllm import VLLMEngine

def main():
    folder, prompts = sys.argv[1], json.loads(sys.argv[2])
    eng = VLLMEngine(folder, dtype="float32", max_model_len=1024, enforce_eager=True)
    one = eng.generate(prompts, GenerationParams(max_new_tokens=8))
    many = eng.generate(prompts, GenerationParams(max_new_tokens=8, n=3))
    sampled = eng.generate(prompts, GenerationParams(max_new_tokens=8, n=3, temperature=1.0, seed=1))
    again = eng.generate(prompts, GenerationParams(max_new_tokens=8, n=3, temperature=1.0, seed=1))
    out = {
        "greedy": [[c.token_ids, c.logprobs] for (c,) in one],
        "greedy_n3": [[[c.token_ids, c.logprobs] for c in cs] for cs in many],
        "sampled": [[c.token_ids for c in cs] for cs in sampled],
        "sampled_again": [[c.token_ids for c in cs] for cs in again],
        "score": eng.score(prompts, [c.token_ids for (c,) in one]),
        "next": eng.next_token_logprobs(prompts, ["A", "B", " correct"]),
    }
    print("RESULT " + json.dumps(out), flush=True)

if __name__ == "__main__":  # vLLM's CPU platform spawns its workers: the guard is required
    main()
"""


@pytest.mark.slow
def test_the_in_process_vllm_engine_matches_the_transformers_engine(tmp_path):
    from itool_core.models import save_policy, tiny_model

    python = vllm_python()
    if python is None:
        pytest.fail("vLLM is not installed: `make install` (itool serve build --server vllm)")
    model, tok = tiny_model(seed=0, head_dim=32)
    folder = save_policy(model, tok, tmp_path / "tiny32")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, **cpu_server_env(folder, 2, 1024), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [python, str(script), str(folder), json.dumps(PROMPTS)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=900,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    got = json.loads(line.removeprefix("RESULT "))
    hf = make_engine("hf", model=model, tokenizer=tok, batch_size=2, progress=False)
    ref = hf.generate(PROMPTS, GenerationParams(max_new_tokens=8))
    for (ids, lps), (c,) in zip(got["greedy"], ref):
        assert ids == c.token_ids
        assert lps == pytest.approx(c.logprobs, abs=2e-3)
    for cs, (ids, _lps) in zip(got["greedy_n3"], got["greedy"]):  # greedy n=3: three copies of the greedy one
        assert len(cs) == 3 and all(x[0] == ids for x in cs)
    assert got["sampled"] == got["sampled_again"] and all(len(cs) == 3 for cs in got["sampled"])
    for s, (_, lps) in zip(got["score"], got["greedy"]):
        assert s == pytest.approx(lps, abs=2e-3)
    for d, r in zip(got["next"], hf.next_token_logprobs(PROMPTS, ["A", "B", " correct"])):
        assert d == pytest.approx(r, abs=2e-3)
