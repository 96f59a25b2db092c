"""Teacher models behind one interface: ``load_teacher(spec).generate(prompts, n=...)``.

Three backends (chosen by ``TeacherSpec.backend``):
  transformers  a local Hugging Face directory, batched and left-padded (``transformers_backend.py``)
  vllm          offline ``vllm.LLM`` for GPU node pools, imported lazily (``vllm_backend.py``)
  openai        any OpenAI-compatible endpoint: a vLLM server, KServe, a hosted API (``openai_backend.py``)

    spec = TeacherSpec(name="t1", model="runs/tiny/teacher-standard", k=4)
    teacher = load_teacher(spec)
    samples = teacher.generate(["Solve step by step: 7+5*3\\n"], n=4)   # -> [[Generation, ...x4]]

Every backend returns the completion only (no prompt), the number of generated tokens, why it stopped
("stop" on EOS or a stop string, "length" at ``max_new_tokens``) and, where the backend gives it, the summed
log-probability of the completion under the model's unmodified distribution (temperature 1, no top-p).
``temperature=0`` means greedy decoding.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from twt.core.prompts import PromptTemplates
from twt.core.schema import TeacherConfig, schema_default

BACKENDS = ("transformers", "vllm", "openai")
OPENAI_APIS = ("completions", "chat")


class TeacherSpecError(ValueError):
    """A teacher specification with a missing, unknown or out-of-range field."""


class TeacherBackendError(RuntimeError):
    """A backend that cannot be used here (missing package, missing API key, unreadable model)."""


class TeacherRequestError(RuntimeError):
    """A request to a teacher endpoint that failed after its retries (names the endpoint and the status)."""


@dataclass(frozen=True)
class Generation:
    """One completion of one prompt."""

    text: str  # the completion only (no prompt, no EOS, no stop string)
    tokens: int  # generated tokens, counting the EOS token when the model stopped on one
    finish_reason: str  # "stop" (EOS or stop string) | "length" (hit max_new_tokens)
    logprob: float | None  # sum of the completion's token log-probs (raw model distribution), when known


@dataclass
class TeacherSpec:
    """One teacher: which model, which backend, how to prompt it and how to sample.

    Fields shared with ``twt.core.schema.TeacherConfig`` take their defaults from it (one place for each).

    Attributes:
        name: short unique name; candidates are written under ``<out_dir>/<name>/``.
        model: local model directory (transformers, vllm) or the served model id (openai).
        backend: "transformers" | "vllm" | "openai".
        templates: prompts for the solve / rewrite / direct instructions (default ``PromptTemplates()``).
        temperature: sampling temperature; 0 means greedy.
        top_p: nucleus sampling mass, 1.0 disables it.
        max_new_tokens: generation budget per completion.
        k: completions sampled per question by ``twt.method.sampling``.
        seed: base seed; every (question, sample) draws from a stream derived from it.
        batch_size: sequences per forward pass.
        dtype: "auto" (bf16 on GPU, fp32 on CPU) | "bfloat16" | "float16" | "float32".
        device: "cpu", "cuda", "cuda:1", ...; None picks CUDA when available (default None).
        tensor_parallel_size: GPUs one vLLM engine spans.
        base_url: endpoint of the openai backend, e.g. "http://vllm:8000/v1".
        api_key_env: NAME of the environment variable holding the API key, never the key.
        max_concurrency: requests in flight at once.
        timeout_s: seconds per HTTP request before it counts as failed.
        max_retries: retries with exponential backoff on 429, 5xx, timeouts and connection errors (default 3).
        stop: strings that end a completion, not included in the text (default none: stop at EOS only).
        static_cache: transformers on CUDA: static KV cache with a compiled decode step; the first batch of
            each shape pays the compile (default False; ignored on CPU).
        openai_api: "completions" (``/v1/completions``, raw prompt) | "chat" (``/v1/chat/completions``, the
            prompt as one user message, for chat-only servers) (default "completions").
    """

    name: str
    model: str
    backend: str = schema_default(TeacherConfig, "backend")
    templates: PromptTemplates = field(default_factory=PromptTemplates)
    temperature: float = schema_default(TeacherConfig, "temperature")
    top_p: float = schema_default(TeacherConfig, "top_p")
    max_new_tokens: int = schema_default(TeacherConfig, "max_new_tokens")
    k: int = schema_default(TeacherConfig, "k")
    seed: int = schema_default(TeacherConfig, "seed")
    batch_size: int = schema_default(TeacherConfig, "batch_size")
    dtype: str = schema_default(TeacherConfig, "dtype")
    device: str | None = None
    tensor_parallel_size: int = schema_default(TeacherConfig, "tensor_parallel_size")
    base_url: str | None = schema_default(TeacherConfig, "base_url")
    api_key_env: str | None = schema_default(TeacherConfig, "api_key_env")
    max_concurrency: int = schema_default(TeacherConfig, "max_concurrency")
    timeout_s: float = schema_default(TeacherConfig, "timeout_s")
    max_retries: int = 3
    stop: tuple[str, ...] = ()
    static_cache: bool = False
    openai_api: str = "completions"

    def __post_init__(self) -> None:
        self.templates = _templates(self.templates, self.name)
        self.stop = tuple(self.stop or ())
        where = f"teacher {self.name!r}"
        if not self.name:
            raise TeacherSpecError("teacher: field 'name' must not be empty")
        if not self.model:
            raise TeacherSpecError(f"{where}: field 'model' must not be empty")
        if self.backend not in BACKENDS:
            raise TeacherSpecError(
                f"{where}: field 'backend' is {self.backend!r}; expected one of {BACKENDS}"
            )
        if self.openai_api not in OPENAI_APIS:
            raise TeacherSpecError(
                f"{where}: field 'openai_api' is {self.openai_api!r}; expected {OPENAI_APIS}"
            )
        if self.dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise TeacherSpecError(f"{where}: field 'dtype' is {self.dtype!r}")
        checks = {
            "temperature": self.temperature >= 0,
            "top_p": 0 < self.top_p <= 1,
            "max_new_tokens": self.max_new_tokens >= 1,
            "k": self.k >= 1,
            "batch_size": self.batch_size >= 1,
            "tensor_parallel_size": self.tensor_parallel_size >= 1,
            "max_concurrency": self.max_concurrency >= 1,
            "timeout_s": self.timeout_s > 0,
            "max_retries": self.max_retries >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise TeacherSpecError(f"{where}: field {name!r} is out of range ({getattr(self, name)!r})")
        if self.backend == "openai" and not self.base_url:
            raise TeacherSpecError(f"{where}: backend 'openai' needs field 'base_url'")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | Any) -> TeacherSpec:
        """Build from a dict or a pydantic model (``twt.core.schema.TeacherConfig``) with the same field names."""
        if hasattr(data, "model_dump"):
            data = data.model_dump()
        if not isinstance(data, Mapping):
            raise TeacherSpecError(f"teacher: expected a mapping, got {type(data).__name__}")
        if "prompts" in data:  # twt.core.schema.TeacherConfig names the template overrides `prompts`
            data = {**data, "templates": data.get("prompts")}
            del data["prompts"]
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TeacherSpecError(
                f"teacher {data.get('name')!r}: unknown field(s) {unknown}; known: {sorted(known)}"
            )
        missing = [name for name in ("name", "model") if not data.get(name)]
        if missing:
            raise TeacherSpecError(f"teacher {data.get('name')!r}: missing field(s) {missing}")
        return cls(**{key: value for key, value in data.items() if value is not None})

    def sampling_fingerprint(self) -> dict[str, Any]:
        """The fields that decide what gets sampled (used to refuse resuming a different run)."""
        keep = (
            "name",
            "model",
            "backend",
            "temperature",
            "top_p",
            "max_new_tokens",
            "k",
            "seed",
            "stop",
            "openai_api",
        )
        out = {key: getattr(self, key) for key in keep}
        out["stop"] = list(self.stop)
        out["solve_template"] = self.templates.solve
        return out


def _templates(value: Any, name: str) -> PromptTemplates:
    if value is None:
        return PromptTemplates()
    if isinstance(value, PromptTemplates):
        return value
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if isinstance(value, Mapping):
        allowed = {"solve", "rewrite", "direct"}
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise TeacherSpecError(f"teacher {name!r}: field 'templates' has unknown key(s) {unknown}")
        return PromptTemplates(**{key: val for key, val in value.items() if val is not None})
    raise TeacherSpecError(
        f"teacher {name!r}: field 'templates' must be a mapping, got {type(value).__name__}"
    )


@runtime_checkable
class TeacherBackend(Protocol):
    def generate(
        self,
        prompts: list[str],
        *,
        n: int = 1,
        temperature: float | None = None,
        seed: int | None = None,
        max_new_tokens: int | None = None,
    ) -> list[list[Generation]]:
        """``n`` completions per prompt, in prompt order; ``temperature=0`` is greedy."""
        ...


def load_teacher(spec: TeacherSpec) -> TeacherBackend:
    """The backend named by ``spec.backend``, loaded and ready to generate; any failure to load it is a
    ``TeacherBackendError`` naming the teacher and the cause."""
    try:
        return _load(spec)
    except (TeacherBackendError, TeacherRequestError):
        raise
    except Exception as err:
        cause = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise TeacherBackendError(
            f"teacher {spec.name!r} ({spec.backend}, {spec.model!r}): {type(err).__name__}: {cause}"
        ) from err


def _load(spec: TeacherSpec) -> TeacherBackend:
    if spec.backend == "transformers":
        from twt.method.teachers.transformers_backend import TransformersTeacher

        return TransformersTeacher(spec)
    if spec.backend == "vllm":
        from twt.method.teachers.vllm_backend import VLLMTeacher

        return VLLMTeacher(spec)
    from twt.method.teachers.openai_backend import OpenAITeacher

    return OpenAITeacher(spec)


def stream_seed(*parts: int | str) -> int:
    """A 31-bit seed derived from ``parts`` (stable across processes and Python versions)."""
    digest = hashlib.blake2b(":".join(str(part) for part in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def truncate_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Cut ``text`` before the first stop string; returns the text and whether one was found."""
    cut = min((pos for pos in (text.find(s) for s in stop if s) if pos >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
