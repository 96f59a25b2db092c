"""Teacher backends: transformers on a tiny Llama built here, openai on a local server, vllm if present."""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from fake_openai_server import TOKEN_LOGPROB, FakeOpenAIServer
from helpers import build_tiny_llama

from twt.core.schema import TeacherConfig
from twt.method.teachers import (
    BackendOptions,
    TeacherBackend,
    TeacherBackendError,
    TeacherRequestError,
    load_teacher,
)
from twt.method.teachers.interface import Generation
from twt.method.teachers.transformers_backend import keyed_gumbel

PROMPTS = [
    "Solve step by step : 7 + 5 * 3",
    "3",
    "Answer directly : 1 - 4 = ; 2 * 2",
    "Rewrite concisely : 9",
]
HAS_VLLM = importlib.util.find_spec("vllm") is not None
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def teacher(tiny_dir: Path):
    return load_teacher(
        TeacherConfig(
            name="tiny", model=str(tiny_dir), max_new_tokens=8, batch_size=3, temperature=1.0, top_p=0.9
        )
    )


# --- transformers -------------------------------------------------------------------------------------------


def test_generate_returns_n_completions_per_prompt(teacher) -> None:
    assert isinstance(teacher, TeacherBackend)
    out = teacher.generate(PROMPTS, n=3, seed=1)
    assert [len(samples) for samples in out] == [3, 3, 3, 3]
    for gen in (g for samples in out for g in samples):
        assert isinstance(gen, Generation)
        assert 1 <= gen.tokens <= 8 and gen.finish_reason in ("stop", "length")
        assert gen.logprob is not None and gen.logprob < 0
        assert (gen.finish_reason == "length") == (gen.tokens == 8 and "<eos>" not in gen.text)
    assert len({g.text for samples in out for g in samples}) > 6  # sampled, not copies


def test_batched_greedy_equals_one_by_one(teacher) -> None:
    batched = teacher.generate(PROMPTS, temperature=0)
    single = [teacher.generate([prompt], temperature=0)[0] for prompt in PROMPTS]
    assert [[g.text for g in s] for s in batched] == [[g.text for g in s] for s in single]
    for (a,), (b,) in zip(batched, single, strict=True):
        assert (a.tokens, a.finish_reason) == (b.tokens, b.finish_reason)
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_sampling_is_reproducible_and_independent_of_batching(tiny_dir: Path, teacher) -> None:
    first = teacher.generate(PROMPTS, n=2, seed=7)
    assert teacher.generate(PROMPTS, n=2, seed=7) == first
    assert teacher.generate(PROMPTS, n=2, seed=8) != first
    one_at_a_time = load_teacher(
        TeacherConfig(
            name="tiny", model=str(tiny_dir), max_new_tokens=8, batch_size=1, temperature=1.0, top_p=0.9
        )
    )
    texts = [[g.text for g in s] for s in one_at_a_time.generate(PROMPTS, n=2, seed=7)]
    assert texts == [[g.text for g in s] for s in first]
    # the same prompt at another index is another stream; at the same index (a subset call) the same one
    assert teacher.generate(PROMPTS[:1], n=2, seed=7)[0] == first[0]


def test_greedy_with_n_gives_identical_copies(teacher) -> None:
    (samples,) = teacher.generate(PROMPTS[:1], n=3, temperature=0)
    assert len(samples) == 3 and samples[0] == samples[1] == samples[2]


def test_logprob_is_the_sum_of_raw_token_logprobs(teacher) -> None:
    (gen,), _ = teacher.generate(PROMPTS[:2], temperature=0)
    prompt_ids = teacher.tokenizer(PROMPTS[0])["input_ids"]
    completion_ids = teacher.tokenizer(gen.text, add_special_tokens=False)["input_ids"]
    if gen.finish_reason == "stop":
        completion_ids.append(teacher.eos_ids[0])
    assert len(completion_ids) == gen.tokens
    with torch.no_grad():
        logits = teacher.model(torch.tensor([prompt_ids + completion_ids])).logits[0].float()
    logprobs = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)
    expected = logprobs.gather(1, torch.tensor(completion_ids)[:, None]).sum().item()
    assert gen.logprob == pytest.approx(expected, abs=1e-4)


def test_finish_reason_stop_at_eos_and_length_at_budget(tiny_dir: Path, teacher, tmp_path: Path) -> None:
    (gen,) = teacher.generate(PROMPTS[:1], temperature=0, max_new_tokens=6)[0]
    ids = teacher.tokenizer(gen.text, add_special_tokens=False)["input_ids"]
    assert gen.finish_reason == "length" and gen.tokens == 6 and len(ids) == 6
    # a copy of the model whose generation_config.json also ends on a token greedy decoding reaches later
    at = next(i for i in range(2, 6) if ids[i] not in ids[:i])
    shutil.copytree(tiny_dir, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "generation_config.json").read_text())
    config["eos_token_id"] = [teacher.tokenizer.eos_token_id, ids[at]]
    (tmp_path / "m" / "generation_config.json").write_text(json.dumps(config))
    stopper = load_teacher(TeacherConfig(name="tiny", model=str(tmp_path / "m"), max_new_tokens=6))
    (stopped,) = stopper.generate(PROMPTS[:1], temperature=0)[0]
    assert stopped.finish_reason == "stop" and stopped.tokens == at + 1
    assert stopped.text == teacher.tokenizer.decode(ids[:at])


def test_stop_string_cuts_the_text(tiny_dir: Path, teacher) -> None:
    (gen,) = teacher.generate(PROMPTS[:1], temperature=0, max_new_tokens=6)[0]
    words = gen.text.split(" ")
    at = next(i for i in range(1, len(words)) if words[i] not in words[:i])
    with pytest.warns(UserWarning, match="will not end generation early"):  # word-level vocab defeats it
        stopper = load_teacher(
            TeacherConfig(name="tiny", model=str(tiny_dir), max_new_tokens=6),
            BackendOptions(stop=(words[at],)),
        )
    (stopped,) = stopper.generate(PROMPTS[:1], temperature=0)[0]
    assert stopped.finish_reason == "stop" and stopped.tokens == at + 1
    assert stopped.text.strip() == " ".join(words[:at])


def test_keyed_gumbel_is_a_pure_function_with_gumbel_moments() -> None:
    keys = torch.tensor([1, 2, 3], dtype=torch.int64)
    noise = keyed_gumbel(keys, step=4, vocab=20000)
    assert torch.equal(noise, keyed_gumbel(keys, step=4, vocab=20000))
    assert torch.equal(noise[1:], keyed_gumbel(keys[1:], step=4, vocab=20000))
    assert not torch.equal(noise, keyed_gumbel(keys, step=5, vocab=20000))
    assert noise.mean().item() == pytest.approx(0.5772, abs=0.02)  # Euler–Mascheroni
    assert noise.var().item() == pytest.approx(torch.pi**2 / 6, rel=0.05)


def test_missing_model_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TeacherBackendError, match="cannot load"):
        load_teacher(TeacherConfig(name="x", model=str(tmp_path / "nope")))


# --- settings ---------------------------------------------------------------------------------------------


def test_the_schema_section_is_the_teacher_and_options_are_checked() -> None:
    """The teacher's settings are ``TeacherConfig`` (its bounds are the schema's); the options that are no
    setting of a run are checked where they are made."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="top_p"):
        TeacherConfig(name="a", model="m", top_p=0)
    with pytest.raises(ValidationError, match="required when backend is 'openai'"):
        TeacherConfig(name="a", model="m", backend="openai")
    assert BackendOptions(stop=["\n\n"]).stop == ("\n\n",)
    with pytest.raises(ValueError, match="openai_api"):
        BackendOptions(openai_api="rest")
    with pytest.raises(ValueError, match="max_retries"):
        BackendOptions(max_retries=-1)


# --- vllm ---------------------------------------------------------------------------------------------------


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed")
def test_vllm_missing_is_a_clear_error() -> None:
    with pytest.raises(TeacherBackendError, match="needs the vllm package"):
        load_teacher(TeacherConfig(name="v", model="m", backend="vllm"))


def test_vllm_backend_takes_the_teachers_settings_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine and each prompt's SamplingParams come from TeacherConfig, BackendOptions and the call's
    arguments, the teacher's where the call gives none (a stand-in ``vllm`` module records them)."""
    import sys
    import types

    made: dict = {"params": []}

    class LLM:
        def __init__(self, **kwargs):
            made["engine"] = kwargs

        def generate(self, prompts, params, use_tqdm):
            choice = types.SimpleNamespace(
                text="x", token_ids=[1, 2], finish_reason="stop", cumulative_logprob=-1.0
            )
            return [types.SimpleNamespace(outputs=[choice] * p.kwargs["n"]) for p in params]

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs
            made["params"].append(kwargs)

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    teacher = TeacherConfig(
        name="v", model="/m", backend="vllm", tensor_parallel_size=2, temperature=0.5, top_p=0.8, seed=4
    )
    backend = load_teacher(teacher, BackendOptions(stop=("##",)))
    assert made["engine"] == {"model": "/m", "tensor_parallel_size": 2, "dtype": "auto", "seed": 4}
    out = backend.generate(["a", "b"], n=2)
    assert [len(s) for s in out] == [2, 2] and out[0][0] == Generation("x", 2, "stop", -1.0)
    first = made["params"][0]
    assert (first["n"], first["temperature"], first["top_p"], first["stop"]) == (2, 0.5, 0.8, ["##"])
    assert first["max_tokens"] == teacher.max_new_tokens
    backend.generate(["a"], temperature=0, max_new_tokens=5)
    greedy = made["params"][-1]
    assert (greedy["temperature"], greedy["top_p"], greedy["max_tokens"]) == (0, 1.0, 5)


@pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed")
@pytest.mark.slow
def test_vllm_generates(tiny_dir: Path) -> None:
    vllm_teacher = load_teacher(
        TeacherConfig(name="v", model=str(tiny_dir), backend="vllm", max_new_tokens=8)
    )
    out = vllm_teacher.generate(PROMPTS, n=2, seed=3)
    assert [len(s) for s in out] == [2] * len(PROMPTS)
    assert out == vllm_teacher.generate(PROMPTS, n=2, seed=3)


# --- openai -------------------------------------------------------------------------------------------------


def openai_teacher(
    server: FakeOpenAIServer, *, max_retries: int = 2, openai_api: str = "completions", **settings
) -> TeacherBackend:
    """The openai backend on ``server`` (``settings`` on top of the test's own)."""
    values = {
        "name": "remote",
        "model": "served-model",
        "backend": "openai",
        "base_url": server.base_url,
        "timeout_s": 5.0,
        **settings,
    }
    options = BackendOptions(max_retries=max_retries, openai_api=openai_api)
    return load_teacher(TeacherConfig(**values), options)


def test_openai_completions_success_with_bearer_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWT_TEST_KEY", "sk-test-123")
    with FakeOpenAIServer() as server:
        remote = openai_teacher(server, api_key_env="TWT_TEST_KEY")
        out = remote.generate(["abc", "de"], n=2, seed=5, temperature=0.5)
    assert [[g.text for g in s] for s in out] == [
        ["step 0\nAnswer: 3", "step 1\nAnswer: 3"],
        ["step 0\nAnswer: 2", "step 1\nAnswer: 2"],
    ]
    assert out[0][0] == Generation(
        "step 0\nAnswer: 3", tokens=3, finish_reason="stop", logprob=3 * TOKEN_LOGPROB
    )
    request = server.requests[0]
    assert (
        request["path"] == "/v1/completions" and request["headers"]["authorization"] == "Bearer sk-test-123"
    )
    body = request["body"]
    assert (body["n"], body["logprobs"], body["model"], body["temperature"]) == (2, 1, "served-model", 0.5)
    assert {r["body"]["seed"] for r in server.requests} != {body["seed"]}  # one stream per prompt


def test_openai_chat_api_and_length_finish() -> None:
    with FakeOpenAIServer() as server:
        remote = openai_teacher(server, openai_api="chat")
        (gen,) = remote.generate(["abc"], max_new_tokens=1)[0]
    assert server.requests[0]["path"] == "/v1/chat/completions"
    assert server.requests[0]["body"]["messages"] == [{"role": "user", "content": "abc"}]
    assert gen == Generation("step", tokens=1, finish_reason="length", logprob=TOKEN_LOGPROB)


def test_openai_retries_429_then_succeeds() -> None:
    with FakeOpenAIServer() as server:
        server.script = ["429", "ok"]
        remote = openai_teacher(server)
        out = remote.generate(["abc"])
    assert out[0][0].text.endswith("Answer: 3")
    assert len(server.requests) == 2 and remote.retries_seen == 1


def test_openai_5xx_after_retries_names_endpoint_and_status() -> None:
    with FakeOpenAIServer() as server:
        server.script = ["500"] * 3
        with pytest.raises(TeacherRequestError, match=r"127\.0\.0\.1:\d+/v1/completions.*HTTP 500"):
            openai_teacher(server).generate(["abc"])
        assert len(server.requests) == 3


def test_openai_timeout_fails_in_bounded_time() -> None:
    with FakeOpenAIServer() as server:
        server.script = ["sleep:3"] * 2
        start = time.monotonic()
        with pytest.raises(TeacherRequestError, match="timed out"):
            openai_teacher(server, timeout_s=0.3, max_retries=1).generate(["abc"])
        assert time.monotonic() - start < 2.5


@pytest.mark.parametrize("behaviour", ["garbage", "wrong"])
def test_openai_garbage_response_is_a_clear_error(behaviour: str) -> None:
    with FakeOpenAIServer() as server:
        server.script = [behaviour]
        with pytest.raises(TeacherRequestError, match="/v1/completions"):
            openai_teacher(server, max_retries=0).generate(["abc"])


def test_openai_bounds_concurrency() -> None:
    with FakeOpenAIServer(delay_s=0.1) as server:
        out = openai_teacher(server, max_concurrency=2).generate([f"p{i}" for i in range(8)])
    assert len(out) == 8 and server.max_in_flight == 2


def test_openai_missing_key_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TWT_MISSING_KEY", raising=False)
    teacher = TeacherConfig(
        name="r", model="m", backend="openai", base_url="http://127.0.0.1:9/v1", api_key_env="TWT_MISSING_KEY"
    )
    with pytest.raises(TeacherBackendError, match="TWT_MISSING_KEY"):
        load_teacher(teacher)
