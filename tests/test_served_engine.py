"""The served engine's transport against a scripted local HTTP server: retries with backoff on transient
errors (connection refused while a server starts, 5xx), fast failure on 4xx with the server's message,
timeouts, bounded concurrency, and the wire format of both server kinds (llama.cpp ``/completion``, vLLM
``/v1/completions``).  The real servers are in tests/test_engine_contract.py; this file needs none."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from itool_core.engines import GenerationParams, make_engine
from itool_core.engines.llama_cpp import _permute_rotary, free_port
from itool_core.engines.openai import ServerError, ServerUnavailable


class Script:
    """What the fake server answers: ``replies`` (status, body) consumed in order, then ``default``."""

    def __init__(self, default=None, delay: float = 0.0):
        self.replies: list[tuple[int, object]] = []
        self.default = default
        self.delay = delay
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()


def _llama_result(body):
    if body.get("logit_bias"):  # a forced token: its (scripted) log-prob
        ((t, _bias),) = body["logit_bias"]
        return {"tokens": [t], "stop_type": "limit", "completion_probabilities": [{"id": t, "logprob": -0.25}]}
    n = int(body.get("n_predict", 1))
    toks = [5 + k for k in range(n)]
    return {
        "index": 0,
        "content": "x" * n,
        "tokens": toks,
        "stop_type": "limit",
        "stopping_word": "",
        "completion_probabilities": [
            {"id": t, "logprob": -0.5, "top_logprobs": [{"id": t, "logprob": -0.5}]} for t in toks
        ],
    }


def _serve(script: Script, port: int | None = None):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):  # quiet
            pass

        def _answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._answer(200, {"data": [{"id": "m", "owned_by": "llamacpp"}]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with script.lock:
                script.bodies.append(body)
                script.in_flight += 1
                script.max_in_flight = max(script.max_in_flight, script.in_flight)
                reply = script.replies.pop(0) if script.replies else None
            try:
                time.sleep(script.delay)
                status, out = reply if reply else (200, script.default or _llama_result(body))
                self._answer(status, out)
            finally:
                with script.lock:
                    script.in_flight -= 1

    class Quiet(ThreadingHTTPServer):
        def handle_error(self, request, client_address):  # a client that timed out closed the socket: expected
            pass

    srv = Quiet(("127.0.0.1", port or 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture
def fake(smol_tokenizer):
    script = Script()
    srv = _serve(script)
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    engines = []

    def make(**kw):
        kw.setdefault("backoff", 0.01)
        eng = make_engine("openai", base_url=url, tokenizer=smol_tokenizer, **kw)
        engines.append(eng)
        return eng

    yield script, make
    for e in engines:
        e.close()
    srv.shutdown()


def test_retries_5xx_then_succeeds(fake):
    script, make = fake
    eng = make()
    script.replies = [(503, {"error": {"message": "Loading model"}}), (500, {"error": "boom"})]
    ((c,),) = eng.generate(["Hello"], GenerationParams(max_new_tokens=3))
    assert c.token_ids == [5, 6, 7] and c.logprobs == [-0.5] * 3 and c.finish_reason == "length"
    assert len(script.bodies) == 3  # two failures retried, the third answered


def test_4xx_fails_fast_with_the_servers_message(fake):
    script, make = fake
    eng = make()
    script.replies = [(400, {"error": {"message": "the request exceeds the context size"}})]
    with pytest.raises(ServerError, match="HTTP 400: the request exceeds the context size"):
        eng.generate(["Hello"], GenerationParams(max_new_tokens=3))
    assert len(script.bodies) == 1  # not retried


def test_gives_up_after_the_retries_with_a_clear_message(fake):
    script, make = fake
    eng = make(retries=2)
    script.replies = [(502, {"error": "bad gateway"})] * 5
    with pytest.raises(ServerUnavailable, match="no answer after 3 attempts.*HTTP 502"):
        eng.generate(["Hello"], GenerationParams(max_new_tokens=1))


def test_timeouts_are_retried_then_reported(fake):
    script, make = fake
    script.delay = 1.0
    eng = make(timeout=0.2, retries=1)
    with pytest.raises(ServerUnavailable, match="timed out after"):
        eng.generate(["Hello"], GenerationParams(max_new_tokens=1))
    assert len(script.bodies) == 2


def test_connection_refused_while_the_server_starts_is_retried(smol_tokenizer):
    port = free_port()
    script = Script()
    started = {}

    def later():
        time.sleep(0.6)
        started["srv"] = _serve(script, port)

    # server_kind/model given: the constructor sends nothing, the first generate meets a refused connection
    eng = make_engine(
        "openai",
        base_url=f"http://127.0.0.1:{port}",
        tokenizer=smol_tokenizer,
        model="m",
        server_kind="llama.cpp",
        backoff=0.05,
        retries=8,
    )
    threading.Thread(target=later, daemon=True).start()
    try:
        t0 = time.monotonic()
        ((c,),) = eng.generate(["Hello"], GenerationParams(max_new_tokens=2))
        assert c.token_ids == [5, 6] and time.monotonic() - t0 >= 0.5
    finally:
        eng.close()
        started["srv"].shutdown()
    with pytest.raises(ServerUnavailable, match="ConnectError"):
        make_engine(
            "openai",
            base_url=f"http://127.0.0.1:{free_port()}",
            tokenizer=smol_tokenizer,
            model="m",
            server_kind="llama.cpp",
            backoff=0.01,
            retries=1,
        ).generate(["Hello"], GenerationParams(max_new_tokens=1))


def test_concurrency_is_bounded(fake):
    script, make = fake
    script.delay = 0.15
    eng = make(concurrency=3)
    out = eng.generate([f"prompt {i}" for i in range(10)], GenerationParams(max_new_tokens=2))
    assert len(out) == 10 and script.max_in_flight == 3


def test_llama_wire_format_sampling_seeds_and_stop_tail(fake, smol_tokenizer):
    script, make = fake
    eng = make()
    assert eng.server_kind == "llama.cpp" and eng.model == "m"
    tok = smol_tokenizer
    gen = tok("ab), cd", add_special_tokens=False)["input_ids"]
    stop_at = next(i for i in range(1, len(gen) + 1) if "), " in tok.decode(gen[:i]))
    ids = gen[:stop_at]
    # llama.cpp drops the stop string's log-probs: the engine forces those tokens to read them (the ids of each
    # entry are matched to the generated ids)
    script.replies = [
        (
            200,
            [
                {
                    "index": j,
                    "content": "ab",
                    "tokens": ids,
                    "stop_type": "word",
                    "stopping_word": "), ",
                    "completion_probabilities": [{"id": t, "logprob": -1.0} for t in ids[:1]],
                }
                for j in (1, 0)
            ],
        )
    ]
    out = eng.generate(
        [
            "Hello",
        ],
        GenerationParams(
            max_new_tokens=8, temperature=0.7, top_p=0.9, n=2, seed=10, stop=("), ",), include_stop_str_in_output=True
        ),
    )
    first = script.bodies[0]
    assert first["n_cmpl"] == 2 and first["seed"] == 10 and first["samplers"] == ["temperature", "top_p"]
    assert first["top_k"] == 0 and first["repeat_penalty"] == 1.0 and first["return_tokens"] is True
    assert first["prompt"] == tok("Hello", add_special_tokens=False)["input_ids"]
    forced = script.bodies[1 : len(ids)]  # one forced token per request, each after the tokens before it
    assert [b["prompt"] for b in forced] == [first["prompt"] + ids[:k] for k in range(1, len(ids))]
    assert [b["logit_bias"] for b in forced] == [[[t, 1e9]] for t in ids[1:]] and all(
        b["n_predict"] == 1 for b in forced
    )
    for c in out[0]:
        assert c.token_ids == ids and c.logprobs == [-1.0] + [-0.25] * (len(ids) - 1)
        assert c.text == "ab), " and c.stop_reason == "), " and c.finish_reason == "stop"
    # prompt i of a call is seeded seed + i·n (its samples seed + i·n + j on the server)
    script.bodies.clear()
    script.default = None
    eng.generate(["a", "b", "c"], GenerationParams(max_new_tokens=2, temperature=1.0, n=2, seed=0))
    assert sorted(b["seed"] for b in script.bodies) == [0, 2, 4]


def test_vllm_wire_format(fake, smol_tokenizer):
    script, make = fake
    eng = make(server_kind="vllm", model="policy")
    eos = smol_tokenizer.eos_token_id
    script.default = {
        "choices": [
            {
                "index": 1,
                "text": "yz",
                "finish_reason": "stop",
                "stop_reason": None,
                "logprobs": {"tokens": ["token_id:7", f"token_id:{eos}"], "token_logprobs": [-0.1, -0.2]},
            },
            {
                "index": 0,
                "text": "x",
                "finish_reason": "length",
                "stop_reason": None,
                "logprobs": {"tokens": ["token_id:9", "token_id:8"], "token_logprobs": [-0.3, -0.4]},
            },
        ]
    }
    (cs,) = eng.generate(["Hi"], GenerationParams(max_new_tokens=2, temperature=1.0, n=2, seed=3, stop=("]",)))
    body = script.bodies[-1]
    assert body["model"] == "policy" and body["n"] == 2 and body["seed"] == 3 and body["logprobs"] == 1
    assert body["return_tokens_as_token_ids"] is True and body["stop"] == ["]"]
    assert [c.token_ids for c in cs] == [[9, 8], [7]] and cs[1].logprobs == [-0.1]  # EOS dropped
    assert cs[0].finish_reason == "length" and cs[1].finish_reason == "stop"
    script.default = {
        "choices": [
            {"index": 0, "text": "", "prompt_logprobs": [None, {"5": {"logprob": -2.0}}, {"6": {"logprob": -3.0}}]}
        ]
    }
    prompt_len = len(smol_tokenizer("Hi", add_special_tokens=False)["input_ids"])
    assert prompt_len == 1
    assert eng.score(["Hi"], [[5, 6]]) == [[-2.0, -3.0]]
    assert script.bodies[-1]["prompt_logprobs"] == 1


def test_vllm_greedy_with_n_samples_asks_for_one_and_copies_it(fake, smol_tokenizer):
    # vLLM 0.32 answers HTTP 400 to n > 1 with greedy sampling (as scripted here): the engine must send n=1
    script, make = fake
    eng = make(server_kind="vllm", model="policy")
    script.default = {
        "choices": [
            {
                "index": 0,
                "text": "x",
                "finish_reason": "length",
                "stop_reason": None,
                "logprobs": {"tokens": ["token_id:9", "token_id:8"], "token_logprobs": [-0.3, -0.4]},
            }
        ]
    }
    out = eng.generate(["Hi", "Hello"], GenerationParams(max_new_tokens=2, n=3))
    assert [b["n"] for b in script.bodies] == [1, 1] and all(b["temperature"] == 0.0 for b in script.bodies)
    assert "seed" not in script.bodies[0]
    for cs in out:
        assert len(cs) == 3 and all(c.token_ids == [9, 8] and c.logprobs == [-0.3, -0.4] for c in cs)
        cs[0].token_ids.append(1)  # copies, not one object three times: a caller may extend one
        assert cs[1].token_ids == [9, 8]
    script.bodies.clear()
    eng.generate(["Hi"], GenerationParams(max_new_tokens=2, n=3, temperature=1.0, seed=4))
    assert script.bodies[0]["n"] == 3 and script.bodies[0]["seed"] == 4  # sampling keeps vLLM's n


def test_rotary_permutation_matches_llama_cpp_convention():
    # convert_hf_to_gguf.py's LlamaModel.permute: rows of each head reordered (halves → interleaved pairs)
    import torch

    w = torch.arange(8 * 3, dtype=torch.float32).reshape(8, 3)  # 2 heads × head_dim 4, 3 columns
    p = _permute_rotary(w, 2)
    assert p[:, 0].tolist() == [0, 6, 3, 9, 12, 18, 15, 21]


def test_prompts_sharing_a_long_prefix_run_on_one_slot(fake):
    # llama.cpp reuses a prefix only inside the slot that computed it: siblings go one after another to the
    # slot their first request used; unrelated prompts run in parallel, unpinned.
    from itool_core.engines.openai import _prefix_groups

    script, make = fake
    script.default = {**_llama_result({"n_predict": 1}), "id_slot": 3}
    eng = make()
    stem = "Book a table for two at 7pm tonight in a quiet Italian place near the station, please. " * 3
    out = eng.generate([stem + "A", "Hello there", stem + "B", stem + "C"], GenerationParams(max_new_tokens=1))
    assert len(out) == 4
    siblings = [b for b in script.bodies if len(b["prompt"]) > 20]
    assert len(siblings) == 3 and "id_slot" not in siblings[0] and [b.get("id_slot") for b in siblings[1:]] == [3, 3]
    assert "id_slot" not in next(b for b in script.bodies if len(b["prompt"]) <= 20)
    assert _prefix_groups([[1] * 40 + [2], [5, 6], [1] * 40 + [3]]) == [[0, 2], [1]]


def test_one_vllm_server_per_run_is_reused_only_where_it_can_serve_the_policy(tmp_path, monkeypatch):
    # engines/shared_vllm.py without vLLM: which folders share a server, when weights are reloaded, when a new
    # server starts (the real reload is in tests/test_engine_contract.py)
    import torch

    from itool_core.engines import shared_vllm
    from itool_core.models import save_policy, tiny_model

    a, tok = tiny_model(seed=0)
    b, _ = tiny_model(seed=1)
    with torch.no_grad():
        b.model.embed_tokens.weight.copy_(a.model.embed_tokens.weight)
    c, _ = tiny_model(seed=1)
    wide, _ = tiny_model(seed=0, head_dim=32)
    fa, fb, fc, fw = (str(save_policy(m, tok, tmp_path / n)) for m, n in ((a, "a"), (b, "b"), (c, "c"), (wide, "w")))
    sig = shared_vllm.policy_signature
    assert sig(fa) == sig(fb)  # same architecture, tokenizer and (tied) embedding: one server can serve both
    assert sig(fa) != sig(fc)  # another embedding: vLLM would keep the old tied head
    assert sig(fa) != sig(fw)  # another architecture
    b.config.use_cache = False  # a folder an older run saved after training
    b.save_pretrained(tmp_path / "b_nocache")
    tok.save_pretrained(tmp_path / "b_nocache")
    assert sig(str(tmp_path / "b_nocache")) == sig(fa)  # a generation default: the same server serves it

    class Server:
        def __init__(self):
            self.running, self.base_url = True, f"http://127.0.0.1:{len(started)}"

        def stop(self):
            self.running = False

    started: list[Server] = []
    reloads: list[tuple[str, str]] = []
    monkeypatch.setattr(shared_vllm, "_reload", lambda srv, folder, timeout: reloads.append((srv.base_url, folder)))

    def start():
        started.append(Server())
        return started[-1]

    try:
        s1, release1 = shared_vllm.acquire(fa, "k", start)
        s2, release2 = shared_vllm.acquire(fa, "k", start)  # same policy at once (mining shards): shared
        assert s1 is s2 and len(started) == 1 and not reloads
        s3, release3 = shared_vllm.acquire(fb, "k", start)  # another policy while the first is in use: a new one
        assert s3 is not s1 and len(started) == 2
        release1(), release2(), release2()  # releasing twice counts once
        s4, release4 = shared_vllm.acquire(str(tmp_path / "b" / ".." / "a"), "k", start)  # a's server, a again
        assert s4 is s1 and not reloads
        release4(), release3()
        s5, release5 = shared_vllm.acquire(fb, "k", start)  # b is served already by s3
        assert s5 is s3 and not reloads
        release5()
        s6, release6 = shared_vllm.acquire(fa, "k", start)
        s7, _ = shared_vllm.acquire(fb, "k", start)  # s1 holds a; s3 free: b stays on s3
        assert (s6, s7) == (s1, s3) and not reloads
        release6()
        # a third policy of the same signature: loaded into a free server instead of starting one
        d, _ = tiny_model(seed=2)
        with torch.no_grad():
            d.model.embed_tokens.weight.copy_(a.model.embed_tokens.weight)
        fd = str(save_policy(d, tok, tmp_path / "d"))
        s8, _ = shared_vllm.acquire(fd, "k", start)
        assert s8 is s1 and reloads == [(s1.base_url, str(Path(fd).resolve()))] and len(started) == 2
        s9, _ = shared_vllm.acquire(fc, "k", start)  # another embedding: never reloaded, a server of its own
        assert len(started) == 3 and s9 is started[-1]
    finally:
        shared_vllm.stop_shared_servers()
    assert not any(s.running for s in started)


@pytest.mark.parametrize(
    ("setting", "native", "expected"),
    [("auto", True, "float32"), ("fast", True, "bfloat16"), ("fast", False, "float32"), ("float16", True, "float16")],
)
def test_vllm_serves_the_folder_dtype_unless_told_and_bf16_only_where_native(
    tmp_path, monkeypatch, setting, native, expected
):
    import itool_core.models
    from itool_core.config import ServeConfig
    from itool_core.engines import serve

    arch = {"hidden_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2}
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "float32", **arch}))
    monkeypatch.setattr(serve, "has_nvidia_gpu", lambda: False)
    monkeypatch.setattr(itool_core.models, "bf16_is_fast", lambda device="cpu": native)
    dtype, args, env = serve._vllm_platform(str(tmp_path), ServeConfig(server="vllm", vllm_dtype=setting))
    assert dtype == expected and "--enforce-eager" in args
    assert env is not None and env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    with pytest.raises(Exception, match="serve.vllm_dtype"):
        ServeConfig(vllm_dtype="int8")
