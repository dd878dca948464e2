"""Perplexity replay buffer (§4.3, Eq. 4): h over the answer tokens only, batching-invariant, hardest-α selection."""

import math

import pyarrow as pa
import pytest
import torch

from itool_core.artifacts import read_table, write_table
from itool_core.calls import ToolCall
from itool_core.config import BufferConfig, ConfigError, SFTConfig
from itool_core.data.records import Example
from itool_core.data.replay import (
    REPLAY_BUFFER,
    answer_spans,
    buffer_examples,
    h_summary,
    refresh_buffer,
    select_for_search,
    select_hardest,
    selection_counts,
    target_perplexity,
)
from itool_core.models import tiny_model
from itool_core.schemas import ALL
from itool_core.train.sft import sft_pair, train_sft

torch.set_num_threads(2)

TOOLS = [
    {
        "name": "convert",
        "description": "Convert an amount between currencies",
        "parameters": {
            "type": "dict",
            "properties": {"amount": {"type": "number"}, "to": {"type": "string"}},
            "required": ["amount", "to"],
        },
    }
]


def pool(n: int = 5) -> list[Example]:
    out = []
    for i in range(n):
        target = [] if i == 1 else [ToolCall("convert", {"amount": 10 * i + 1, "to": "EUR"})] * (1 + i % 2)
        out.append(
            Example(
                f"p{i}",
                "synthetic",
                "simple",
                TOOLS,
                [{"role": "user", "content": "Convert " + "and again " * i + "to euros."}],
                target,
            )
        )
    return out


def _manual_h(model, tok, ex: Example) -> float:
    """exp of the causal-LM loss with the prompt masked: the definition, computed the plain way."""
    prompt, completion = sft_pair(tok, ex)
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + c])
    labels = torch.tensor([[-100] * len(p) + c])
    with torch.no_grad():
        return math.exp(model(input_ids=ids, labels=labels).loss.item())


@pytest.fixture(scope="module")
def model_tok():
    return tiny_model(seed=4)


def test_answer_span_is_the_sft_completion(model_tok):
    _, tok = model_tok
    for ex in pool():
        ((ids, start),) = answer_spans(tok, [ex])
        completion = sft_pair(tok, ex)[1]
        assert tok.decode(ids[start:]) == completion and ids[-1] == tok.eos_token_id
        assert ids[:start] == tok(sft_pair(tok, ex)[0], add_special_tokens=False)["input_ids"]


def test_h_is_exp_mean_nll_of_the_answer_tokens(model_tok):
    model, tok = model_tok
    exs = pool()
    h, lengths = target_perplexity(model, tok, exs, batch_size=1, dtype="float32", return_lengths=True)
    for ex, hi, n in zip(exs, h, lengths):
        assert hi == pytest.approx(_manual_h(model, tok, ex), rel=1e-4)
        assert n == len(tok(sft_pair(tok, ex)[1], add_special_tokens=False)["input_ids"])


def test_batching_and_right_padding_do_not_change_h(model_tok):
    model, tok = model_tok
    exs = pool()  # different prompt and answer lengths: real padding inside a batch
    one = target_perplexity(model, tok, exs, batch_size=1, dtype="float32")
    batched = target_perplexity(model, tok, exs, batch_size=3, dtype="float32")
    assert batched == pytest.approx(one, rel=1e-4)
    bf16 = target_perplexity(model, tok, exs, batch_size=5, dtype="bfloat16")
    assert bf16 == pytest.approx(one, rel=0.05)  # autocast: close, not exact
    assert tok.padding_side in ("left", "right") and not model.training


def test_h_drops_on_what_the_policy_was_trained_on(tmp_path):
    model, tok = tiny_model(seed=5)
    exs = pool(4)
    before = target_perplexity(model, tok, exs, dtype="float32")
    cfg = SFTConfig(per_device_batch_size=2, learning_rate=3e-2, lr_scheduler="constant", merge=False, bf16=False)
    result = train_sft(model, [("pool", exs)], cfg, tmp_path, tokenizer=tok)
    after = target_perplexity(result.model, tok, exs, dtype="float32")
    assert all(a < b for a, b in zip(after, before)), (before, after)
    # log h is the per-example SFT loss; the mean of the last logged losses agrees in direction
    assert sum(map(math.log, after)) / 4 < result.stages[0].first_loss


def _buffer(hs: list[float], no_call: set[int]) -> list[dict]:
    return [{"id": f"r{i:02d}", "h": h, "is_no_call": i in no_call} for i, h in enumerate(hs)]


def test_select_hardest_keeps_the_call_no_call_proportion():
    # 10 rows, 3 of them no-call; α = 0.5 → k = 5 → no-call round(5·3/10 = 1.5) = 2, call 3
    hs = [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.5, 1.0]
    rows = _buffer(hs, no_call={5, 7, 9})
    picked = select_hardest(rows, alpha=0.5)
    assert [r["id"] for r in picked] == ["r00", "r01", "r02", "r05", "r07"]
    # without the proportion: simply the top 5 by h (no-call r05 would be the only abstention)
    assert [r["id"] for r in select_hardest(rows, 0.5, keep_call_proportion=False)] == [
        "r00",
        "r01",
        "r02",
        "r03",
        "r04",
    ]
    # a table works the same as a list of dicts, and ties in h go by id
    tied = _buffer([2.0, 3.0, 3.0, 3.0, 1.0], no_call=set())
    assert [r["id"] for r in select_hardest(pa.Table.from_pylist(tied), 0.4)] == ["r01", "r02"]


def test_skip_hardest_selects_a_band_below_the_top():
    # calls by h: r00 r01 r02 r03 r04 r06 r08 (7); no-calls: r05 r07 r09 (3).  α = 0.3 → k = 3: call 2, no-call 1.
    hs = [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.5, 1.0]
    rows = _buffer(hs, no_call={5, 7, 9})
    assert [r["id"] for r in select_hardest(rows, 0.3)] == ["r00", "r01", "r05"]
    # skip half of each group: calls skip round(3.5) = 4 → r04 r06; no-calls skip round(1.5) = 2 → r09
    assert [r["id"] for r in select_hardest(rows, 0.3, skip_hardest=0.5)] == ["r04", "r06", "r09"]
    # without the proportion: skip 5 of 10, take the next 3
    assert [r["id"] for r in select_hardest(rows, 0.3, keep_call_proportion=False, skip_hardest=0.5)] == [
        "r05",
        "r06",
        "r07",
    ]
    # near the bottom the window moves up: still k rows, the easiest ones
    assert [r["id"] for r in select_hardest(rows, 0.3, keep_call_proportion=False, skip_hardest=0.9)] == [
        "r07",
        "r08",
        "r09",
    ]
    # the config carries the same three settings
    cfg = BufferConfig(alpha=0.3, skip_hardest=0.5)
    assert select_for_search(rows, cfg) == select_hardest(rows, 0.3, skip_hardest=0.5)
    with pytest.raises(ValueError, match="skip_hardest"):
        select_hardest(rows, 0.3, skip_hardest=1.0)
    with pytest.raises(ConfigError, match="buffer.skip_hardest"):
        BufferConfig(skip_hardest=-0.1)


@pytest.mark.parametrize(
    "n_call,n_no,alpha,expected",
    [
        (28, 7, 0.2, (6, 1)),  # k = 7 exactly; 7·7/35 = 1.4 → 1
        (8, 2, 0.2, (2, 0)),  # k = 2; 2·2/10 = 0.4 → 0 (a share below one half rounds away)
        (5, 5, 0.3, (1, 2)),  # k = 3; no-call 3·5/10 = 1.5 rounds half up → 2, call gets the rest
        (0, 4, 0.5, (0, 2)),
        (3, 0, 0.1, (1, 0)),  # at least one row from a non-empty buffer
        (0, 0, 0.2, (0, 0)),
    ],
)
def test_selection_counts_rounding(n_call, n_no, alpha, expected):
    assert selection_counts(n_call, n_no, alpha) == expected
    k_call, k_no = selection_counts(n_call, n_no, alpha)
    assert k_call <= n_call and k_no <= n_no


def test_alpha_is_a_fraction():
    with pytest.raises(ValueError, match="fraction"):
        select_hardest(_buffer([1.0], set()), alpha=20)


def test_refresh_buffer_table_round_trip(model_tok, tmp_path):
    model, tok = model_tok
    exs = pool()
    table = refresh_buffer(model, tok, exs, BufferConfig(batch_size=2, dtype="float32"), iteration=2)
    assert ALL["replay_buffer"] is REPLAY_BUFFER
    ref = write_table(table, tmp_path / "buffer.parquet", REPLAY_BUFFER)
    back = read_table(ref)  # schema tag checked
    rows = back.to_pylist()
    assert [r["id"] for r in rows] == [e.id for e in exs]
    assert [r["is_no_call"] for r in rows] == [False, True, False, False, False]
    assert {r["iteration"] for r in rows} == {2}
    assert [r["h"] for r in rows] == pytest.approx(target_perplexity(model, tok, exs, dtype="float32"), rel=1e-4)
    assert [(e.id, e.target, e.tools) for e in buffer_examples(back)] == [(e.id, e.target, e.tools) for e in exs]
    s = h_summary(back)
    assert s["all"]["n"] == 5 and s["no_call"]["n"] == 1 and s["all"]["min"] <= s["all"]["median"] <= s["all"]["max"]


def test_buffer_cli_refresh_and_select(tmp_path, capsys):
    from itool_core.cli import main
    from itool_core.models import save_policy
    from itool_core.schemas import EXAMPLES

    model, tok = tiny_model(seed=6)
    model_dir = save_policy(model, tok, tmp_path / "policy")
    exs = pool()
    write_table([e.to_row() for e in exs], tmp_path / "pool.parquet", EXAMPLES)
    assert (
        main(
            [
                "buffer",
                "refresh",
                "--model",
                str(model_dir),
                "--pool",
                str(tmp_path / "pool.parquet"),
                "-o",
                str(tmp_path / "buf.parquet"),
                "--batch-size",
                "2",
                "--iteration",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "scored 5 pool examples" in out and "median" in out and "no_call" in out
    assert (
        main(
            [
                "buffer",
                "select",
                str(tmp_path / "buf.parquet"),
                "--alpha",
                "0.4",
                "--skip-hardest",
                "0",
                "-o",
                str(tmp_path / "hard.parquet"),
            ]
        )
        == 0
    )
    hard = read_table(tmp_path / "hard.parquet", EXAMPLES)
    assert hard.num_rows == 2
    buf = read_table(tmp_path / "buf.parquet", REPLAY_BUFFER).to_pylist()
    assert set(hard.column("id").to_pylist()) == {r["id"] for r in select_hardest(buf, 0.4)}
    assert (
        main(
            [
                "buffer",
                "select",
                str(tmp_path / "buf.parquet"),
                "--alpha",
                "0.4",
                "--skip-hardest",
                "0.6",
                "-o",
                str(tmp_path / "band.parquet"),
            ]
        )
        == 0
    )
    band = read_table(tmp_path / "band.parquet", EXAMPLES).column("id").to_pylist()
    assert set(band) == {r["id"] for r in select_hardest(buf, 0.4, skip_hardest=0.6)}
    assert not set(band) & set(hard.column("id").to_pylist())
