"""Students, bases and teachers given as s3:// URIs load through twt.core.model_cache (real S3 server, tiny
model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from twt.core import store
from twt.core.load import data_dir, parse_config
from twt.core.model_cache import DONE, local_model
from twt.method.cts import load_reference

STUDENT = data_dir() / "tiny" / "student-base"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path / "hf" / "twt-models"


def upload_plain(s3, prefix: str) -> None:
    """As `aws s3 cp --recursive` would: plain objects, no manifest."""
    for path in sorted(STUDENT.rglob("*")):
        if path.is_file():
            s3.client.fput_object(s3.bucket, f"{prefix}/{path.relative_to(STUDENT)}", str(path))


def test_a_plain_s3_prefix_loads_as_a_model(s3, cache: Path) -> None:
    upload_plain(s3, "models/student-base")
    path = local_model(s3.uri("models/student-base"))
    assert Path(path) == cache / s3.bucket / "models" / "student-base"
    assert (Path(path) / DONE).is_file()
    model, tokenizer = load_reference(s3.uri("models/student-base/"), device="cpu")  # trailing / too
    assert model.config.num_hidden_layers >= 1 and tokenizer("1+2").input_ids
    # the second load uses the cached copy: nothing is fetched again
    s3.client.remove_object(s3.bucket, "models/student-base/config.json")
    assert local_model(s3.uri("models/student-base")) == path


def test_a_published_directory_is_verified_against_its_manifest(s3, cache: Path) -> None:
    store.publish_dir(STUDENT, s3.uri("registry/student/1"))
    path = Path(local_model(s3.uri("registry/student/1")))
    assert (path / "config.json").read_bytes() == (STUDENT / "config.json").read_bytes()
    assert (path / store.MANIFEST_NAME).is_file()


def test_a_missing_model_names_the_uri_and_leaves_nothing(s3, cache: Path) -> None:
    with pytest.raises(store.NotFoundError, match="models/nothing-here"):
        local_model(s3.uri("models/nothing-here"))
    assert not (cache / s3.bucket / "models" / "nothing-here").exists()


def test_local_paths_and_hub_ids_pass_through(cache: Path) -> None:
    assert local_model(str(STUDENT)) == str(STUDENT)
    assert local_model("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"
    assert local_model(f"file://{STUDENT}") == str(STUDENT)


def test_the_configuration_takes_s3_models() -> None:
    text = (Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml").read_text()
    config = parse_config(
        text.replace("${TWT_DATA}/tiny/student-base", "s3://twt-models/student-base"), base_dir="."
    )
    assert config.student.model == "s3://twt-models/student-base"
