"""MCTS on a real engine (tiny random model): lock-step batching and token-exact pairs."""

import pytest

from itool_core.artifacts import read_table
from itool_core.calls import ToolCall
from itool_core.data.records import Example
from itool_core.engines.hf import HFEngine
from itool_core.mcts.mine import mine
from itool_core.mcts.pairs import PAIRS
from itool_core.mcts.policy import EnginePolicy, PolicyConfig
from itool_core.mcts.search import MCTSConfig

TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "dict", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


def _examples():
    return [
        Example(
            "m/0",
            "test",
            "simple",
            TOOLS,
            [{"role": "user", "content": "Weather in Paris?"}],
            [ToolCall("get_weather", {"city": "Paris"})],
        ),
        Example("m/1", "test", "irrelevance", TOOLS, [{"role": "user", "content": "Tell me a joke."}], []),
    ]


class SpyEngine:
    """The real HF engine, recording every (prompt ids, completion ids) it produced."""

    def __init__(self, engine):
        self.engine, self.tokenizer, self.seen, self.calls = engine, engine.tokenizer, set(), []

    def generate(self, prompts, params):
        outs = self.engine.generate(prompts, params)
        self.calls.append(("generate", len(prompts), params.n))
        for p, comps in zip(prompts, outs):
            for c in comps:
                self.seen.add((tuple(self.engine.encode(p)), tuple(c.token_ids)))
        return outs

    def next_token_logprobs(self, prompts, cands):
        self.calls.append(("confidence", len(prompts), 1))
        return self.engine.next_token_logprobs(prompts, cands)


@pytest.fixture(scope="module")
def spy(tiny):
    model, tok = tiny
    return SpyEngine(HFEngine(model, tok, batch_size=16, progress=False, share_prefixes=True))  # as mining builds it


LOOSE = dict(min_q_gap=0.0, min_chosen_q=-100.0, max_overlap=1.0)


def test_mined_pair_ids_are_exactly_what_the_search_generated(spy, tmp_path):
    cfg = MCTSConfig(simulations=3, k=3, seed=0, **LOOSE)
    res = mine(
        spy, _examples(), tmp_path, cfg, PolicyConfig(max_step_tokens=12, max_rollout_tokens=12, continue_incomplete=0)
    )
    pairs = read_table(res.pairs, PAIRS).to_pylist()
    assert res.n_trees == 2 and len(list((tmp_path / "trees").glob("*.json"))) == 2
    assert pairs, "a random model still produces distinct siblings with different Q"
    for p in pairs:
        for side in ("chosen_ids", "rejected_ids"):
            # the step was generated from exactly this prompt (the tree prompt + earlier steps, as ids)
            assert (tuple(p["prompt_ids"]), tuple(p[side])) in spy.seen
        assert spy.tokenizer.decode(p["chosen_ids"], skip_special_tokens=True) == p["chosen"]
        assert p["prompt"].startswith(spy.tokenizer.decode(p["prompt_ids"][:5]))


def test_lockstep_sends_one_batched_call_per_round(spy, tmp_path):
    spy.calls.clear()
    cfg = MCTSConfig(simulations=2, k=2, seed=1, **LOOSE)
    mine(
        spy,
        _examples(),
        tmp_path,
        cfg,
        PolicyConfig(max_step_tokens=8, max_rollout_tokens=8, continue_incomplete=0),
        trees_per_batch=2,
    )
    gens = [c for c in spy.calls if c[0] == "generate" and c[2] == 2]
    # each expansion call carries BOTH trees' leaves with n = k samples each
    assert gens and all(c[1] == 2 for c in gens)


def test_self_evaluation_is_a_probability(spy):
    ex = _examples()[0]
    from itool_core.mcts.search import State
    from itool_core.mcts.tree import Tree

    pol = EnginePolicy(spy, {ex.id: ex})
    tree = Tree(ex.id, "p", [1, 2, 3])
    conf = pol.confidence([State(tree, tree.root)])
    assert 0.0 < conf[0] < 1.0
    assert "Reference answer:\n[get_weather(city='Paris')]" in pol.eval_prompt(State(tree, tree.root))
