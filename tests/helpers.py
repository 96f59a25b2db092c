"""Plain helpers that several test modules share (fixtures live in tests/conftest.py)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from twt.core.records import DistillRow
from twt.embedded.task import make_questions, reasoning_of, solve_steps

# What a published model version records beside its files: metrics, the gate's verdict and the lineage.
MODEL_METRICS = {
    "student-base": {"accuracy": 0.25, "mean_output_tokens": 4.0},
    "stage1": {"accuracy": 0.90, "mean_output_tokens": 40.0},
    "stage3": {"accuracy": 0.80, "mean_output_tokens": 8.0},
}
MODEL_GATE = {
    "passed": True,
    "student": "stage3",
    "reasons": ["stage3 accuracy 80.0% ≥ the minimum 50.0%", "stage3 writes 8.0 tokens: 80.0% fewer"],
}
MODEL_LINEAGE = {
    "teachers": [{"name": "teacher-verbose"}, "teacher-terse"],
    "dcrs": {"candidates": {"in": 1200, "kept": 340, "rejected_quality": 700, "rejected_diversity": 160}},
    "compression": {"method": "cts", "target_ratio": 0.5, "achieved_ratio": 0.52},
    "stages": [
        {"stage": 1, "parent": "Qwen/Qwen2.5-0.5B", "data": "distill.jsonl", "rows": 340},
        {"stage": 3, "parent": "runs/r1/stage2", "data": "distill.jsonl", "rows": 340},
    ],
    "pipeline_run_id": "run-7f3a",
}


def distill_rows(n: int = 48) -> list[DistillRow]:
    """``n`` distillation rows of the embedded task's training split (seed 2), each with the canonical
    reasoning and, as compressed reasoning, the step values only."""
    return [
        DistillRow(
            id=q.id,
            question=q.question,
            reasoning=reasoning_of(q.question),
            answer=q.answer,
            source="teacher-large#0",
            compressed_reasoning=";".join(str(s.value) for s in solve_steps(q.question)),  # values only
        )
        for q in make_questions(n, seed=2, split="train")
    ]


def write_model_dir(path: Path, seed: int = 0) -> dict[str, bytes]:
    """A tiny Hugging Face-like directory with random weights in ``path``; returns relative path → bytes."""
    rng = random.Random(seed)
    files = {
        "config.json": json.dumps({"model_type": "qwen2", "hidden_size": 8, "seed": seed}).encode(),
        "model.safetensors": rng.randbytes(100_000),
        "tokenizer.json": json.dumps({"vocab": {"a": seed}}).encode(),
        "tokenizer_config.json": b"{}",
        "twt.json": json.dumps({"kind": "sft", "base_model": "runs/r1/stage2", "seed": seed}).encode(),
        "extra/merges.txt": rng.randbytes(100),
    }
    for rel, data in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    return files


def save_tiny_llama(
    path: Path, tokenizer, *, hidden: int = 32, layers: int = 2, max_positions: int = 256
) -> Path:
    """A random Llama (``hidden`` wide, ``layers`` deep, no BOS token) over ``tokenizer``, both saved in
    ``path``. Seed torch first for reproducible weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_llama(path: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A word-level tokenizer trained on a few strings and a random Llama (hidden 32, 2 layers), in path."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [
        "Solve step by step : 7 + 5 * 3 Answer : 2",
        "Answer directly : 1 - 4 Confidence : 0.9",
        "Rewrite concisely : reasoning student attempt",
    ] + [f"{a} {b}" for a in range(10) for b in "+-*=;"]
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(
        texts, trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<eos>"])
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
    )
    torch.manual_seed(seed)
    return save_tiny_llama(path, fast, hidden=hidden, layers=layers)


def publish_with_records(model: Path, root: Path, **options: Any) -> Any:
    """``model`` published as "student" in the registry ``root`` with MODEL_METRICS, MODEL_GATE and
    MODEL_LINEAGE; ``options``: more keywords of ``twt.registry.models.publish``."""
    from twt.registry import models

    return models.publish(
        model, root, "student", metrics=MODEL_METRICS, gate=MODEL_GATE, lineage=MODEL_LINEAGE, **options
    )


def kfp_client_double(
    existing_id: str | None = None,
    backend: str = "2.17.0",
    versions: dict[str, str] | None = None,
    pipeline: str = "twt-distillation",
) -> Any:
    """A ``kfp.Client`` double with kfp 2.17's signatures, holding the versions ``{name: id}`` of one
    pipeline: ``upload_pipeline`` makes the pipeline and the version KFP names after it; uploads and
    deletes change ``versions``; ``client.sent`` holds the bytes of every uploaded file. Uploads and
    runs print their link on stdout, as kfp's do."""
    from unittest.mock import create_autospec

    import kfp
    import kfp_server_api
    from urllib3 import HTTPResponse

    client = create_autospec(kfp.Client, instance=True)
    client._healthz_api = create_autospec(kfp_server_api.HealthzServiceApi, instance=True)
    body = {"commit_sha": "0f1e2d", "tag_name": backend, "multi_user": True, "pipeline_store": "database"}
    client._healthz_api.healthz_service_get_healthz.return_value = HTTPResponse(
        body=json.dumps(body).encode(), status=200, preload_content=True
    )
    state = {"id": existing_id, "versions": dict(versions or {})}
    client.versions, client.sent = state["versions"], []

    def get_pipeline_id(name):
        return state["id"] if name == pipeline else None

    def upload_pipeline(pipeline_package_path, pipeline_name=None, description=None, namespace=None):
        client.sent.append(Path(pipeline_package_path).read_bytes())
        state["id"] = "new-id"
        state["versions"][pipeline_name] = "default-version-id"  # pipeline_upload_server.go, 2.17.0
        print("Pipeline details: http://kfp/#/pipelines/details/new-id")
        return kfp_server_api.V2beta1Pipeline(
            pipeline_id="new-id", name=pipeline_name, display_name=pipeline_name
        )

    def upload_pipeline_version(pipeline_package_path, pipeline_version_name, pipeline_id=None, **_):
        client.sent.append(Path(pipeline_package_path).read_bytes())
        state["versions"][pipeline_version_name] = f"id-{pipeline_version_name}"
        print(
            f"Pipeline details: http://kfp/#/pipelines/details/{pipeline_id}/version/id-{pipeline_version_name}"
        )
        return kfp_server_api.V2beta1PipelineVersion(
            pipeline_id=pipeline_id, pipeline_version_id=f"id-{pipeline_version_name}"
        )

    def list_pipeline_versions(pipeline_id, page_token="", page_size=10, sort_by="", filter=None):
        (predicate,) = json.loads(filter)["predicates"]
        assert predicate["key"] == "display_name" and predicate["operation"] == 1
        wanted = predicate["stringValue"]
        found = [
            kfp_server_api.V2beta1PipelineVersion(
                pipeline_id=pipeline_id, display_name=n, pipeline_version_id=i
            )
            for n, i in state["versions"].items()
            if n == wanted
        ]
        return kfp_server_api.V2beta1ListPipelineVersionsResponse(pipeline_versions=found or None)

    def delete_pipeline_version(pipeline_id, pipeline_version_id):
        state["versions"] = {n: i for n, i in state["versions"].items() if i != pipeline_version_id}
        client.versions = state["versions"]
        return {}

    client.get_pipeline_id.side_effect = get_pipeline_id
    client.upload_pipeline.side_effect = upload_pipeline
    client.upload_pipeline_version.side_effect = upload_pipeline_version
    client.list_pipeline_versions.side_effect = list_pipeline_versions
    client.delete_pipeline_version.side_effect = delete_pipeline_version
    client.create_experiment.return_value = kfp_server_api.V2beta1Experiment(experiment_id="exp-1")
    client.run_pipeline.side_effect = lambda *a, **k: (
        print("Run details: http://kfp/#/runs/details/run-1") or (kfp_server_api.V2beta1Run(run_id="run-1"))
    )
    return client
