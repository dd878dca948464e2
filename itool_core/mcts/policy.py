"""The search policy on a real engine: propose steps, roll out, and self-evaluate C(s) (Eq. 7).

* ``propose`` — ONE batched ``engine.generate`` call for all leaves of a round, ``n = k`` samples each, stop
  strings at the end of a call (``steps.CALL_STOP_STRINGS``); prompts are token ids (tree prompt + the ids of
  the steps so far), so every step is conditioned on exactly the tokens the search generated and a mined pair
  is what the search saw.  The prior is ``exp(mean log-prob)`` of the step's tokens, straight from the
  engine (no second pass).  A sample whose stop string fired inside a string literal is continued in a
  follow-up batched call until the step is complete.
* ``rollout`` — ONE batched call, one sampled continuation per new node, to the end of the answer.
* ``confidence`` — ONE batched forward pass: the policy's probability of the answer token meaning "correct"
  under an evaluation prompt that shows the tools, the question, a reference answer and the partial answer
  (MCTS-DPO's self-evaluation); ``C = P(B) / (P(A) + P(B))`` read from the next-token distribution, not
  from sampled text (the authors' release samples 7 tokens and substring-matches,
  docs/design.md#the-authors-release-differs-from-the-paper); :func:`~itool_core.mcts.reward.self_evaluation`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..calls import render_target
from ..config import PolicyConfig
from ..engines.base import GenerationParams
from .reward import self_evaluation
from .search import Candidate, State
from .steps import CALL_STOP_STRINGS, first_step_end

EVAL_SYSTEM = (
    "You grade answers of a function-calling assistant. Compare the proposed partial answer with the "
    "reference answer: it is correct so far if every function call in it appears in the reference answer with "
    "the same arguments (order does not matter), or if both decline to call any function."
)
EVAL_USER = (
    "Available functions:\n{tools}\n\nQuestion:\n{question}\n\nReference answer:\n{reference}\n\n"
    "Proposed partial answer:\n{partial}\n\n"
    "Is the proposed partial answer correct so far? Reply with one letter: A (incorrect) or B (correct)."
)


class EnginePolicy:
    """:class:`~itool_core.mcts.search.SearchPolicy` over any :class:`~itool_core.engines.base.Engine`."""

    def __init__(self, engine, examples_by_id: dict[str, Any], cfg: PolicyConfig = PolicyConfig()):
        self.engine = engine
        self.tok = engine.tokenizer
        self.examples = examples_by_id
        self.cfg = cfg
        eos = [self.tok.eos_token_id] if self.tok.eos_token_id is not None else []
        self.eos_ids = set(eos)

    # ------------------------------------------------------------------------------------------ propose
    def propose(self, states: Sequence[State], k: int, seed: int) -> list[list[Candidate]]:
        params = GenerationParams(
            max_new_tokens=self.cfg.max_step_tokens,
            temperature=self.cfg.temperature,
            top_p=self.cfg.top_p,
            n=k,
            stop=CALL_STOP_STRINGS,
            seed=seed,
            include_stop_str_in_output=True,
        )
        outs = self.engine.generate([st.prompt_ids for st in states], params)
        result: list[list[Candidate]] = [[] for _ in states]
        pending: list[tuple[int, list[int], list[float], str, str | None]] = []  # + finish/stop reason
        for i, comps in enumerate(outs):
            for c in comps:
                pending.append((i, list(c.token_ids), list(c.logprobs), c.finish_reason, c.stop_reason))
        for attempt in range(self.cfg.continue_incomplete + 1):
            retry = []
            for i, ids, lps, finish, stop_reason in pending:
                cand = self._candidate(
                    states[i], ids, lps, finish, stop_reason, last=attempt == self.cfg.continue_incomplete
                )
                if cand is None:
                    retry.append((i, ids, lps))
                elif cand is not False:
                    result[i].append(cand)
            if not retry:
                break
            more = self.engine.generate(
                [states[i].prompt_ids + ids for i, ids, _ in retry], params.with_(n=1, seed=seed + 7919 * (attempt + 1))
            )
            pending = [
                (i, ids + list(c[0].token_ids), lps + list(c[0].logprobs), c[0].finish_reason, c[0].stop_reason)
                for (i, ids, lps), c in zip(retry, more)
            ]
        return result

    def _candidate(self, st: State, ids, lps, finish, stop_reason, last: bool):
        """A Candidate, None (a stop fired inside a string literal: continue it), or False (empty: drop it)."""
        if not ids:
            return False
        text = self.tok.decode(ids, skip_special_tokens=True)
        end = first_step_end(text, st.answer_text)
        if end is None and stop_reason is not None and not last:
            return None
        # no complete step and generation over (EOS / length / retries spent): the answer ends here
        terminal = True if end is None else end.terminal
        return Candidate(text, tuple(ids), sum(lps) / len(lps), terminal)

    # ------------------------------------------------------------------------------------------ rollout
    def rollout(self, states: Sequence[State], seed: int) -> list[str]:
        params = GenerationParams(
            max_new_tokens=self.cfg.max_rollout_tokens, temperature=self.cfg.rollout_temperature, n=1, seed=seed
        )
        outs = self.engine.generate([st.prompt_ids for st in states], params)
        return [c[0].text for c in outs]

    # --------------------------------------------------------------------------------------- confidence
    def eval_prompt(self, st: State) -> str:
        ex = self.examples[st.tree.example_id]
        question = "\n".join(f"{m['role']}: {m['content']}" for m in ex.messages if m.get("role") != "system")
        partial = st.answer_text.strip() or "(nothing yet)"
        msgs = [
            {"role": "system", "content": EVAL_SYSTEM},
            {
                "role": "user",
                "content": EVAL_USER.format(
                    tools=json.dumps(
                        [{"name": t.get("name"), "parameters": t.get("parameters", {})} for t in ex.tools],
                        separators=(",", ":"),
                    ),
                    question=question,
                    reference=render_target(ex.target),
                    partial=partial,
                ),
            },
        ]
        return self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    def confidence(self, states: Sequence[State]) -> list[float]:
        lps = self.engine.next_token_logprobs([self.eval_prompt(st) for st in states], ["A", "B"])
        return [self_evaluation(d["A"], d["B"]) for d in lps]
