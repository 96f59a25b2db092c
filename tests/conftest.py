"""Fixtures shared by several test modules: the S3 server (store, registries), the small end-to-end
configuration (tests/test_demo.py, tests/test_pipeline.py), and a tiny base model with training pairs (the
training tests)."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import pytest
import yaml
from minio import Minio
from s3_server import FAST, KEY, S3, Root, start_server

from twt.core.load import default_config_path
from twt.core.prompts import PromptTemplates, completion
from twt.core.store import S3Settings
from twt.embedded.task import make_questions, reasoning_of
from twt.embedded.tiny import DEFAULT_DIR, TOKENIZER_DIR, TinyModelSpec, new_model


@pytest.fixture(scope="session")
def s3_endpoint():
    server, endpoint = start_server()
    yield endpoint
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch) -> S3:
    """A fresh bucket per test, with the environment set the way a Kubernetes secret would."""
    for name in ("TWT_S3_SECURE", "TWT_S3_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TWT_S3_ENDPOINT", f"http://{s3_endpoint}")
    monkeypatch.setenv("TWT_S3_ACCESS_KEY", KEY)
    monkeypatch.setenv("TWT_S3_SECRET_KEY", KEY)
    client = Minio(s3_endpoint, KEY, KEY, secure=False)
    bucket = f"twt-{uuid.uuid4().hex[:12]}"
    client.make_bucket(bucket)
    return S3(bucket, dataclasses.replace(S3Settings.from_env(), **FAST), client)


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> Root:
    """A registry root, once local and once on S3."""
    if request.param == "local":
        return Root(str(tmp_path / "registry"), None, None)
    s3 = request.getfixturevalue("s3")
    return Root(f"s3://{s3.bucket}/registry", s3.settings, s3)


@pytest.fixture(scope="module")
def small_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/demo.yaml with 40 training questions, 2 samples per teacher, one epoch per stage and a gate
    that lets any student through (a tiny budget teaches little: this checks the plumbing, not the method)."""
    data = yaml.safe_load(default_config_path().read_text())
    data["task"].update(train_questions=40, eval_questions=60)
    for teacher in data["teachers"]:
        teacher.update(k=2, max_new_tokens=48)
    data["stages"]["common"].update(epochs=1, batch_size=4, max_length=128)
    for stage in ("stage1", "stage2", "stage3"):
        data["stages"][stage].pop("epochs", None)
        data["stages"][stage].pop("updates", None)
    data["gate"] = {"min_accuracy": 0.0, "max_accuracy_drop": None, "min_token_reduction": None}
    path = tmp_path_factory.mktemp("config") / "small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread, above all on a shared, busy machine (a module that wants it
    uses it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Llama (hidden 32, 1 layer) with the embedded task's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_DIR / TOKENIZER_DIR)
    path = tmp_path_factory.mktemp("base")
    new_model(TinyModelSpec("base", hidden=32, layers=1, heads=2), tokenizer, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def sft_pairs() -> list[tuple[str, str]]:
    """(prompt, completion) pairs of 96 training questions (seed 1): the solve template and the canonical
    reasoning."""
    templates = PromptTemplates()
    return [
        (templates.render("solve", question=q.question), completion(reasoning_of(q.question), q.answer))
        for q in make_questions(96, seed=1, split="train")
    ]
