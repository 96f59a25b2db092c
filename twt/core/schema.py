"""The run configuration's schema: one YAML file describes a whole run (data, teachers, student, DCRS,
compression, the three training stages, evaluation, the promotion gate and the registry), one pydantic
section per concept, every default written here once. ``twt.core.load`` reads and resolves a file.

    config.stage(2).learning_rate                     # stage settings = stages.common + stages.stage2
    config.teachers[0].templates().render("solve", question="7+5")
    Path("resolved.yaml").write_text(config.model_dump_yaml())

Every section forbids unknown keys, so a typo is an error, not a silently ignored setting, and refuses a
setting given where it has no effect (``_Section.applies``). Numbers are strict (no bool, NaN or infinity).
"""

from __future__ import annotations

import copy
import itertools
import re
import string
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from twt.core import names
from twt.core.prompts import PromptTemplates


class ConfigError(ValueError):
    """A configuration that cannot be read or does not validate; the message names file, field and line."""


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"  # safe in file names, S3 keys and KFP task names
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "gpt2", "Qwen/Qwen2.5-7B-Instruct"
BASELINES = ("student-base", "stage1", "stage2", "teachers")
PLACEHOLDERS = {"question", "reasoning", "answer", "attempt"}


def _problem(field: str | tuple[str | int, ...], problem: str) -> PydanticCustomError:
    """An error about ``field`` (a path relative to the model that raises it)."""
    loc = (field,) if isinstance(field, str) else field
    return PydanticCustomError("twt_config", "{problem}", {"field": loc, "problem": problem})


class _Section(BaseModel):
    """A settings section. ``applies`` maps a field to (the field that selects, the values it is used with):
    such a field given while it has no effect is refused by name, and left out of dumps when unused. Unknown
    keys are refused, numbers are strict (no bool for a number, no NaN or infinity)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    applies: ClassVar[dict[str, tuple[str, tuple[str, ...]]]] = {}

    def unused_fields(self) -> list[str]:
        """The fields that have no effect with this section's chosen options."""
        return [f for f, (selector, values) in self.applies.items() if getattr(self, selector) not in values]

    @model_validator(mode="after")
    def _refuse_unused(self) -> Any:
        for name in self.unused_fields():
            if name in self.model_fields_set:
                selector, values = self.applies[name]
                used = " or ".join(repr(v) for v in values)
                raise _problem(
                    name,
                    f"has no effect: only used when {selector} is {used} ({selector} is "
                    f"{getattr(self, selector)!r}); remove it",
                )
        return self

    @model_serializer(mode="wrap")
    def _drop_unused(self, handler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in self.unused_fields():
                data.pop(name, None)
        return data

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        """YAML ``true`` is not ``1``: a bool where an int or float belongs is an error naming the field."""
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key) if isinstance(key, str) else None
                if field is not None and (where := _bool_in_number(field.annotation, value)) is not None:
                    raise _problem((key, *where), "expected a number, got a boolean (true/false)")
        return data


def _bool_in_number(annotation: Any, value: Any) -> tuple[int, ...] | None:
    """The position of a bool in ``value`` where ``annotation`` (int, float, their optionals and lists)
    wants a number: ``()`` for the value itself, ``(i,)`` for a list item; None when there is none."""
    args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    if getattr(annotation, "__origin__", None) in (list, tuple):
        items = value if isinstance(value, list) and args else []
        return next(
            ((i,) for i, item in enumerate(items) if _bool_in_number(args[0], item) is not None), None
        )
    if annotation in (int, float) or (args and all(a in (int, float) for a in args)):
        return () if isinstance(value, bool) else None
    return None


# --- data ------------------------------------------------------------------------------------------------


class TaskConfig(_Section):
    """Where the questions come from: the embedded mod-10 chains, or question files."""

    kind: Literal["embedded", "files"] = Field(
        "embedded",
        description="'embedded': generate twt.embedded.task questions; 'files': read question JSONL files.",
    )
    train_questions: int = Field(
        2000, ge=1, description="embedded: number of (unlabeled) training questions."
    )
    eval_questions: int = Field(500, ge=1, description="embedded: number of held-out evaluation questions.")
    seed: int = Field(0, description="embedded: seed of the question draw (train and eval never overlap).")
    weights: list[float] = Field(
        [0.15, 0.25, 0.3, 0.3],
        min_length=1,
        description="embedded: relative share of chains of 1, 2, ..., N operations (the default leans "
        "towards 3-4 steps).",
    )
    questions: str | None = Field(
        None, description="files: path or URI of the training questions.jsonl (answers optional)."
    )
    eval: str | None = Field(
        None, description="files: path or URI of the held-out questions.jsonl (answers required)."
    )

    @field_validator("weights")
    @classmethod
    def _weights_are_shares(cls, weights: list[float]) -> list[float]:
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError("must all be >= 0, with a positive sum")
        return weights

    @model_validator(mode="after")
    def _files_match_kind(self) -> TaskConfig:
        for name in ("questions", "eval"):
            given = getattr(self, name) is not None
            if self.kind == "files" and not given:
                raise _problem(name, "required when kind is 'files'")
            if self.kind == "embedded" and given:
                raise _problem(name, "only used when kind is 'files' (kind is 'embedded')")
        return self


# --- teachers and student ----------------------------------------------------------------------------------


class PromptsConfig(_Section):
    """Overrides of ``twt.core.prompts.PromptTemplates``; null keeps the default. Placeholders: {question},
    {reasoning}, {answer}, {attempt}; completions must end with ``Answer: <answer>``."""

    solve: str | None = Field(None, description="Ask for reasoning, then the answer; must use {question}.")
    rewrite: str | None = Field(
        None, description="Ask to rewrite {reasoning} concisely (also sees {question}, {answer}, {attempt})."
    )
    direct: str | None = Field(None, description="Ask for the answer alone; must use {question}.")

    @field_validator("solve", "rewrite", "direct")
    @classmethod
    def _known_placeholders(cls, template: str | None, info) -> str | None:
        if template is None:
            return None
        try:
            used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        except ValueError as err:
            raise ValueError(f"not a valid template ({err}); write literal braces as {{{{ and }}}}") from None
        unknown = used - PLACEHOLDERS
        if unknown:
            raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; allowed: {sorted(PLACEHOLDERS)}")
        needed = "reasoning" if info.field_name == "rewrite" else "question"
        if needed not in used:
            raise ValueError(f"must contain {{{needed}}}")
        return template


class TeacherConfig(_Section):
    """One teacher model and how to sample from it."""

    name: str = Field(pattern=NAME_PATTERN, description="Unique name; names candidate files and KFP tasks.")
    model: str = Field(
        min_length=1,
        description="Local path, URI or Hugging Face id; for backend 'openai' the model name served.",
    )
    backend: Literal["transformers", "vllm", "openai"] = Field(
        "transformers",
        description="How to generate: in-process transformers, vLLM, or an OpenAI-compatible API.",
    )
    k: int = Field(4, ge=1, description="Samples per question.")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(96, ge=1, description="Cap on generated tokens per sample.")
    seed: int = Field(0, description="Sampling seed.")
    batch_size: int = Field(64, ge=1, description="Prompts per generation batch (transformers, vllm).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype; 'auto' = as saved (float32 on CPU)."
    )
    tensor_parallel_size: int = Field(1, ge=1, description="vllm: GPUs one model is sharded over.")
    base_url: str | None = Field(None, description="openai: endpoint, e.g. http://teacher:8000/v1.")
    api_key_env: str | None = Field(
        None,
        description="openai: NAME of the environment variable holding the API key (never the key itself).",
    )
    max_concurrency: int = Field(8, ge=1, description="openai: requests in flight at once.")
    timeout_s: float = Field(60, gt=0, description="openai: seconds before a request is retried.")
    prompts: PromptsConfig | None = Field(None, description="Overrides of the three prompt templates.")

    applies: ClassVar = {
        "batch_size": ("backend", ("transformers", "vllm")),
        "dtype": ("backend", ("transformers", "vllm")),
        "max_concurrency": ("backend", ("openai",)),
        "timeout_s": ("backend", ("openai",)),
    }

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, name: str | None) -> str | None:
        if name is not None and not re.fullmatch(ENV_NAME_PATTERN, name):
            raise ValueError(
                "must be the NAME of an environment variable (e.g. TEACHER_API_KEY), not the key"
            )
        return name

    @model_validator(mode="after")
    def _backend_options(self) -> TeacherConfig:
        if self.backend == "openai" and not self.base_url:
            raise _problem("base_url", "required when backend is 'openai'")
        if self.backend != "openai":
            for name in ("base_url", "api_key_env"):
                if getattr(self, name) is not None:
                    raise _problem(name, f"only used by backend 'openai' (backend is {self.backend!r})")
        if self.backend != "vllm" and self.tensor_parallel_size != 1:
            raise _problem(
                "tensor_parallel_size", f"only used by backend 'vllm' (backend is {self.backend!r})"
            )
        return self

    def templates(self) -> PromptTemplates:
        """The prompt templates: ``twt.core.prompts.PromptTemplates`` defaults with this teacher's
        overrides."""
        overrides = self.prompts.model_dump(exclude_none=True) if self.prompts else {}
        return PromptTemplates(**overrides)


class StudentConfig(_Section):
    """The student base model that the three stages fine-tune."""

    model: str = Field(min_length=1, description="Local path, URI or Hugging Face id of the student base.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Training dtype; 'auto' = bfloat16 on GPUs that support it, else float32."
    )
    hidden: int | None = Field(
        None,
        ge=8,
        description="With layers: a fresh tiny student of this width (twt.embedded.tiny.build_student).",
    )
    layers: int | None = Field(
        None,
        ge=1,
        description="With hidden: a fresh tiny student of this depth, built from `model`'s tokenizer with "
        "the packaged student base's recipe; null = train `model` itself.",
    )

    @model_validator(mode="after")
    def _size_together(self) -> StudentConfig:
        if (self.hidden is None) != (self.layers is None):
            raise ValueError("hidden and layers go together: set both for a fresh student, or neither")
        return self

    @field_validator("dtype")
    @classmethod
    def _only_auto(cls, dtype: str) -> str:
        if dtype != "auto":  # twt.training.sft picks the precision itself; another value would be ignored
            raise ValueError("only 'auto' is implemented (bf16 autocast on GPUs with bf16, else float32)")
        return dtype


# --- selection and compression -----------------------------------------------------------------------------


class DCRSConfig(_Section):
    """Dual-criteria rejection sampling: keep correct/confident candidates, drop near-duplicates."""

    quality_threshold: float = Field(0.5, ge=0, le=1, description="Drop candidates with quality below this.")
    similarity_threshold: float = Field(
        0.9, ge=0, le=1, description="Two reasonings for one question this cosine-similar are duplicates."
    )
    max_per_question: int | None = Field(
        4, ge=1, description="Keep at most this many reasonings per question; null = no cap."
    )
    embedding_model: str | None = Field(
        None, description="sentence-transformers model for similarity; null = bundled all-MiniLM-L6-v2."
    )
    use_gold: bool = Field(
        False,
        description="Label with gold answers where questions have them (an option); default: the teachers' "
        "confidence-weighted vote is the pseudo-label (unsupervised, as in TwT).",
    )
    batch_size: int = Field(256, ge=1, description="Embedding batch size.")
    confidence: Literal["candidate", "vote_share"] = Field(
        "candidate",
        description="A candidate's confidence: 'candidate' = as sampled (self-reported when the prompt asks "
        "for it, else from log-probabilities); 'vote_share' = 1 each, the score is the label's vote share.",
    )


class CompressionConfig(_Section):
    """How stage 2's compressed reasoning is made from stage 1's full reasoning."""

    method: Literal["teacher", "cts", "unconditional", "truncate"] = Field(
        "teacher",
        description="'teacher': a teacher rewrites concisely; 'cts': conditional token selection by a "
        "reference model; 'unconditional': token importance without conditioning on the answer; "
        "'truncate': the first `ratio` of the reasoning's tokens (TwT's fixed-length baseline).",
    )
    teacher: str | None = Field(None, description="method 'teacher': teacher name; null = the first teacher.")
    ratio: float = Field(0.5, gt=0, le=1, description="Target length of compressed / full reasoning.")
    reference_model: str | None = Field(
        None, description="cts/unconditional: scoring model (path or HF id); null = the stage-1 student."
    )
    condition: Literal["question_answer", "question"] = Field(
        "question_answer", description="cts: what token importance is conditioned on."
    )
    window: int = Field(
        512,
        ge=8,
        description="cts/unconditional: tokens scored per window (at most the reference's context).",
    )
    selection: Literal["exact", "windowed"] = Field(
        "exact",
        description="cts/unconditional: 'exact' keeps the top ratio of each row; 'windowed' the top ratio of "
        "each segment of `segment` tokens (LLMLingua's iterative compression, as in the CTS paper's code).",
    )
    segment: int = Field(64, ge=1, description="cts/unconditional, selection 'windowed': tokens per segment.")
    attempt_verdict: bool = Field(
        False,
        description="teacher: the stage-1 student's attempt ({attempt}) ends with whether its answer was "
        "right (for served teachers; the tiny local teacher was trained on attempts without it).",
    )

    applies: ClassVar = {
        "teacher": ("method", ("teacher",)),
        "ratio": ("method", ("cts", "unconditional", "truncate")),
        "reference_model": ("method", ("cts", "unconditional", "truncate")),
        "condition": ("method", ("cts",)),
        "window": ("method", ("cts", "unconditional")),
        "selection": ("method", ("cts", "unconditional")),
        "segment": ("method", ("cts", "unconditional")),
        "attempt_verdict": ("method", ("teacher",)),
    }


# --- training stages --------------------------------------------------------------------------------------

STAGES = (1, 2, 3)  # 1: full reasoning, 2: compressed reasoning, 3: the answer alone


def check_stage(n: int) -> int:
    """``n`` when it is a stage number; else a ``ValueError`` naming the stages."""
    if n not in STAGES:
        raise ValueError(f"no stage {n}; stages are {', '.join(map(str, STAGES))}")
    return n


StageNumber = Annotated[int, AfterValidator(check_stage)]


class StageConfig(_Section):
    """Training settings of one stage (the merge of ``stages.common`` and ``stages.stageN``)."""

    epochs: float = Field(2, gt=0, description="Passes over the stage's training rows.")
    updates: int | None = Field(
        None,
        ge=1,
        description="Budget in optimiser updates instead of epochs (the rows are cycled until then); "
        "answer-only pairs pack many to a row, so an epoch of stage 3 is a few updates.",
    )
    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate (AdamW, cosine decay).")
    batch_size: int = Field(32, ge=1, description="Sequences per device step.")
    grad_accum: int = Field(1, ge=1, description="Steps accumulated per optimiser update.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of updates spent warming up.")
    max_length: int = Field(256, ge=8, description="Token cap per example (prompt + completion).")
    lora: bool = Field(False, description="Train LoRA adapters (peft) instead of all weights.")
    lora_r: int = Field(8, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling alpha.")
    pack: bool = Field(True, description="Pack several short examples into one sequence.")
    seed: int = Field(0, description="Seed of initialisation and data order.")
    save_every: int = Field(0, ge=0, description="Checkpoint every this many updates (0 = only at the end).")
    mix_previous: float = Field(
        0.0, ge=0, le=1, description="Share of the previous stage's rows mixed in (against forgetting)."
    )


def _overrides_model() -> type[BaseModel]:
    """``StageOverrides``: the fields of ``StageConfig``, each optional (null = inherit from common)."""
    fields: dict[str, Any] = {}
    for name, info in StageConfig.model_fields.items():
        optional = copy.copy(info)
        optional.default = None
        fields[name] = (info.annotation | None, optional)
    return create_model(
        "StageOverrides", __base__=_Section, __doc__="Per-stage overrides of ``stages.common``.", **fields
    )


StageOverrides = _overrides_model()


class StagesConfig(_Section):
    """Stage 1 (full reasoning), 2 (compressed reasoning), 3 (answer only): shared defaults + overrides."""

    common: StageConfig = Field(default_factory=StageConfig, description="Settings shared by all stages.")
    stage1: StageOverrides = Field(default_factory=StageOverrides, description="Overrides for stage 1.")
    stage2: StageOverrides = Field(
        default_factory=lambda: StageOverrides(mix_previous=0.2), description="Overrides for stage 2."
    )
    stage3: StageOverrides = Field(
        default_factory=lambda: StageOverrides(mix_previous=0.2), description="Overrides for stage 3."
    )

    def stage(self, n: int) -> StageConfig:
        """The settings of stage ``n`` (1, 2 or 3): common, then that stage's overrides."""
        overrides = getattr(self, f"stage{check_stage(n)}").model_dump(exclude_none=True)
        return StageConfig.model_validate({**self.common.model_dump(), **overrides})

    @model_validator(mode="after")
    def _stage1_has_no_previous(self) -> StagesConfig:
        if self.stage(1).mix_previous:
            raise _problem(("stage1", "mix_previous"), "must be 0: stage 1 has no previous stage")
        return self


class ReferenceConfig(_Section):
    """CTS's reference model trained apart (``twt.training.reference``) on the DCRS rows,
    answer-conditioned."""

    train: bool = Field(
        False,
        description="Train the reference model for cts/unconditional (used unless "
        "compression.reference_model names one); false: the stage-1 student scores.",
    )
    base_model: str | None = Field(None, description="Model it is trained from; null = the student base.")
    updates: int = Field(1000, ge=1, description="Optimiser updates.")
    learning_rate: float = Field(3e-3, gt=0, description="Peak learning rate.")
    batch_size: int = Field(8, ge=1, description="Packed rows per update.")
    max_length: int = Field(256, ge=8, description="Tokens per packed row.")
    seed: int = Field(0, description="Seed of the data order.")


class InternalizeConfig(_Section):
    """Stepwise internalisation in stage 2 (``twt.training.internalize``): the reasoning removed phase by
    phase."""

    schedule: Literal["none", "left", "cts"] = Field(
        "none",
        description="'none': stage 2 trains on the compressed reasoning once; 'left': a fixed number of "
        "tokens removed per phase from the left (Deng et al. 2024); 'cts': CTS ratio decay, the least "
        "important tokens first. With a schedule, stage 2 starts from the full reasoning and ends with none.",
    )
    tokens_per_phase: int = Field(6, ge=1, description="left: reasoning tokens removed per phase.")
    ratios: list[float] = Field(
        [0.75, 0.5, 0.25, 0.0], description="cts: kept share per phase, strictly decreasing, ending at 0."
    )
    updates_per_phase: int = Field(150, ge=1, description="Optimiser updates of every phase.")
    smoothing: float | None = Field(
        None, gt=0, description="Removal smoothing λ (extra tokens removed ∝ exp(−λ·o)); null = off."
    )
    reset_optimizer: bool = Field(True, description="A fresh AdamW at every phase (Deng et al.).")

    @model_validator(mode="after")
    def _valid_ratios(self) -> InternalizeConfig:
        ratios = self.ratios
        if self.schedule == "cts":
            if not ratios or ratios[-1] != 0 or any(not 0 <= r < 1 for r in ratios):
                raise _problem("ratios", f"must lie in [0, 1) and end at 0, got {ratios}")
            if any(b >= a for a, b in itertools.pairwise(ratios)):
                raise _problem("ratios", f"must decrease strictly, got {ratios}")
        return self


# --- evaluation, gate, registry ---------------------------------------------------------------------------


class EvaluationConfig(_Section):
    """Evaluation of the final student against baselines on the held-out questions (greedy decoding)."""

    max_new_tokens: int = Field(96, ge=1, description="Cap on generated tokens per answer.")
    batch_size: int = Field(64, ge=1, description="Prompts per generation batch.")
    baselines: list[str] = Field(
        list(BASELINES),
        description="Also evaluate: 'student-base', 'stage1', 'stage2', 'teachers' (all) or a teacher name.",
    )


class GateConfig(_Section):
    """The promotion policy; a null criterion is not checked."""

    min_accuracy: float | None = Field(0.5, ge=0, le=1, description="Final student accuracy at least this.")
    max_accuracy_drop: float | None = Field(
        0.05, ge=0, le=1, description="Accuracy at most this much (absolute) below drop_baseline's."
    )
    drop_baseline: str = Field("stage1", description="Baseline for max_accuracy_drop (evaluated model name).")
    min_token_reduction: float | None = Field(
        0.5,
        ge=0,
        le=1,
        description="Mean generated tokens at least this fraction below reduction_baseline's.",
    )
    reduction_baseline: str = Field("stage1", description="Baseline for min_token_reduction.")
    candidates: list[str] = Field(
        ["stage3", "stage2", "stage1"],
        min_length=1,
        description="The students the gate may promote, final stage first.",
    )


class RegistryConfig(_Section):
    """Where a promoted student is published (``<uri>/<model_name>/<version>/``)."""

    uri: str | None = Field(None, description="s3://bucket/prefix or a directory; null = <workdir>/registry.")
    model_name: str = Field(
        "twt-student",
        pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$",
        description="Registered model name (lower case, digits, '.', '_', '-'; see twt.registry.models).",
    )
    version: str = Field(
        "auto",
        pattern=r"^(auto|(0|[1-9][0-9]{0,8})(\.(0|[1-9][0-9]{0,8})){0,2})$",
        description="'auto' = one more than the largest published; else 1 to 3 numbers, e.g. 3 or 1.2.0.",
    )
    tags: list[str] = Field(
        default_factory=list, description="Labels recorded with a published version, e.g. [candidate]."
    )
    kubeflow_registry_address: str | None = Field(
        None,
        description="Also register in Kubeflow Model Registry at this host:port (extra 'kubeflow-registry').",
    )

    @field_validator("model_name")
    @classmethod
    def _model_name(cls, name: str) -> str:
        return names.check_model_name(name)  # the registry's own rule (also: no '..')


class TrainingConfig(_Section):
    """How the stages train: processes, sharding, durable checkpoints, Kubeflow training jobs."""

    processes: int = Field(1, ge=1, description="Training processes per node (one per GPU; on CPU: gloo).")
    nodes: int = Field(1, ge=1, description="Nodes; more than one needs a Kubeflow training job.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'cuda': one GPU per process; 'cpu'; 'auto' = cuda if there is a GPU."
    )
    parallel: Literal["ddp", "fsdp"] = Field(
        "ddp", description="'ddp' for students that fit on one GPU; 'fsdp' (full shard) for those that don't."
    )
    attn_implementation: str = Field(
        "sdpa",
        description="transformers attention for training: sdpa, eager, flash_attention_2 (packed rows go "
        "varlen), or 'auto' (flash_attention_2 where installed on a GPU).",
    )
    checkpoints: str | None = Field(
        None,
        description="Durable checkpoint root (s3://bucket/prefix or a PVC path); checkpoints go to "
        "<root>/<run name>/<run id>/stage<n>; null = <workdir>/checkpoints.",
    )
    keep_last_checkpoint: bool = Field(False, description="Keep a finished stage's last checkpoint.")
    engine: Literal["auto", "local", "trainjob", "pytorchjob"] = Field(
        "auto",
        description="Where a stage asking for >1 GPU or >1 node runs: 'trainjob' (Kubeflow Trainer), "
        "'pytorchjob' (Training Operator v1), 'local' (torchrun in the step's pod); 'auto' = trainjob "
        "inside Kubernetes for >1 GPU or >1 node, local otherwise.",
    )
    namespace: str | None = Field(None, description="Namespace of training jobs; null = the step pod's own.")
    image: str | None = Field(None, description="Training jobs' image; null = TWT_IMAGE (the step's image).")
    runtime: str = Field("twt-torch-distributed", description="ClusterTrainingRuntime a TrainJob refers to.")
    gpu_resource: str = Field("nvidia.com/gpu", description="Extended resource name of one GPU.")
    start_timeout_s: float = Field(900, gt=0, description="A job not running by then fails the step.")
    node_selector: dict[str, str] | None = Field(
        None, description="Node selector of a training job's pods; null = the submitting step pod's."
    )
    tolerations: list[dict[str, Any]] | None = Field(
        None, description="Tolerations of a training job's pods (Kubernetes objects); null = the step pod's."
    )
    priority_class: str | None = Field(
        None,
        description="PriorityClass of a PyTorchJob's pods (a TrainJob cannot set one: set it in its "
        "runtime); null = none.",
    )


# --- the run ----------------------------------------------------------------------------------------------


class RunConfig(_Section):
    """One run of the pipeline; ``twt.core.load`` says how its paths resolve."""

    name: str = Field(pattern=NAME_PATTERN, description="Run name.")
    workdir: str | None = Field(
        None, description="Local directory or s3:// URI for the run's artifacts; null = runs/<name>."
    )
    task: TaskConfig = Field(default_factory=TaskConfig, description="The questions.")
    teachers: list[TeacherConfig] = Field(min_length=1, description="Teacher models (unique names).")
    student: StudentConfig = Field(description="The student base model.")
    dcrs: DCRSConfig = Field(default_factory=DCRSConfig, description="Candidate selection.")
    compression: CompressionConfig = Field(default_factory=CompressionConfig, description="Stage 2 data.")
    stages: StagesConfig = Field(default_factory=StagesConfig, description="Training settings per stage.")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="Evaluation.")
    gate: GateConfig = Field(default_factory=GateConfig, description="Promotion policy.")
    registry: RegistryConfig = Field(default_factory=RegistryConfig, description="Model registry.")
    training: TrainingConfig = Field(
        default_factory=TrainingConfig, description="Processes, checkpoints, training jobs."
    )
    internalize: InternalizeConfig = Field(
        default_factory=InternalizeConfig, description="Stepwise internalisation schedule of stage 2."
    )
    reference: ReferenceConfig = Field(
        default_factory=ReferenceConfig, description="CTS's separately trained reference model."
    )

    @model_validator(mode="before")
    @classmethod
    def _default_workdir(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("workdir") is None and isinstance(data.get("name"), str):
            data = {**data, "workdir": f"runs/{data['name']}"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        names = [t.name for t in self.teachers]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise _problem(("teachers", i, "name"), f"duplicate teacher name {name!r}")
        if self.compression.teacher is not None and self.compression.teacher not in names:
            raise _problem(
                ("compression", "teacher"), f"no teacher {self.compression.teacher!r}; have {names}"
            )
        for i, baseline in enumerate(self.evaluation.baselines):
            if baseline not in BASELINES and baseline not in names:
                raise _problem(
                    ("evaluation", "baselines", i),
                    f"unknown baseline {baseline!r}; use {BASELINES} or {names}",
                )
        evaluated = set(self.evaluation.baselines) - {"teachers"}
        if "teachers" in self.evaluation.baselines:
            evaluated |= set(names)
        for field in ("drop_baseline", "reduction_baseline"):
            baseline = getattr(self.gate, field)
            if baseline not in evaluated:
                raise _problem(
                    ("gate", field),
                    f"{baseline!r} is not evaluated; evaluation.baselines is {self.evaluation.baselines}",
                )
        return self

    @property
    def teacher_names(self) -> list[str]:
        return [t.name for t in self.teachers]

    def teacher(self, name: str) -> TeacherConfig:
        """The teacher called ``name``."""
        for t in self.teachers:
            if t.name == name:
                return t
        raise KeyError(f"no teacher {name!r}; have {self.teacher_names}")

    def compression_teacher(self) -> TeacherConfig:
        """The teacher that rewrites reasoning for stage 2 (``compression.teacher`` or the first)."""
        return self.teacher(self.compression.teacher) if self.compression.teacher else self.teachers[0]

    def stage(self, n: int) -> StageConfig:
        """Training settings of stage ``n`` (1, 2, 3): ``stages.common`` merged with ``stages.stageN``."""
        return self.stages.stage(n)

    def model_dump_yaml(self) -> str:
        """This configuration as YAML (every setting explicit; stage overrides only where set)."""
        data = self.model_dump(mode="json")
        for n in STAGES:
            key = f"stage{n}"
            data["stages"][key] = getattr(self.stages, key).model_dump(mode="json", exclude_none=True)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)


def schema_default(model: type[BaseModel], field: str) -> Any:
    """The default of a settings field, for library classes that share the field: one place for each."""
    return model.model_fields[field].get_default(call_default_factory=True)


def setting_help(model: type[BaseModel], field: str) -> str:
    """A command-line flag's help, from the schema: the field's description and its default."""
    info = model.model_fields[field]
    return f"{info.description} (default {info.get_default(call_default_factory=True)!r})"


# --- paths ------------------------------------------------------------------------------------------------


# --- loading ----------------------------------------------------------------------------------------------
