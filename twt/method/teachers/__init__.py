"""Teacher models behind one interface: ``load_teacher(teacher).generate(prompts, n=...)``.

Three backends (chosen by ``TeacherConfig.backend``):
  transformers  a local Hugging Face directory, batched and left-padded (``transformers_backend.py``)
  vllm          offline ``vllm.LLM`` for GPU node pools, imported lazily (``vllm_backend.py``)
  openai        any OpenAI-compatible endpoint: a vLLM server, KServe, a hosted API (``openai_backend.py``)

    teacher = load_teacher(TeacherConfig(name="t1", model="runs/tiny/teacher-standard", k=4))
    samples = teacher.generate(["Solve step by step: 7+5*3\\n"], n=4)   # -> [[Generation, ...x4]]

The teacher's settings are the schema's section (``twt.core.schema.TeacherConfig``), validated there; what is
not a setting of a run (device, stop strings, ...) is ``BackendOptions``. Every backend returns the completion
only (no prompt), the number of generated tokens, why it stopped ("stop" on EOS or a stop string, "length" at
``max_new_tokens``) and, where the backend gives it, the summed log-probability of the completion under the
model's unmodified distribution (temperature 1, no top-p). ``temperature=0`` means greedy decoding.

The shared types live in ``interface.py``, which the backends import (``Generation``, the seed and stop
helpers); this package exports ``load_teacher`` and what its callers pass and catch, and imports a backend
only when ``load_teacher`` needs it.
"""

from __future__ import annotations

from twt.core.schema import TeacherConfig
from twt.method.teachers.interface import (
    BackendOptions,
    TeacherBackend,
    TeacherBackendError,
    TeacherRequestError,
)

__all__ = ["BackendOptions", "TeacherBackend", "TeacherBackendError", "TeacherRequestError", "load_teacher"]


def load_teacher(teacher: TeacherConfig, options: BackendOptions | None = None) -> TeacherBackend:
    """The backend named by ``teacher.backend``, loaded and ready to generate; any failure to load it is a
    ``TeacherBackendError`` naming the teacher and the cause."""
    options = options or BackendOptions()
    try:
        return _load(teacher, options)
    except (TeacherBackendError, TeacherRequestError):
        raise
    except Exception as err:
        cause = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise TeacherBackendError(
            f"teacher {teacher.name!r} ({teacher.backend}, {teacher.model!r}): {type(err).__name__}: {cause}"
        ) from err


def _load(teacher: TeacherConfig, options: BackendOptions) -> TeacherBackend:
    if teacher.backend == "transformers":
        from twt.method.teachers.transformers_backend import TransformersTeacher

        return TransformersTeacher(teacher, options)
    if teacher.backend == "vllm":
        from twt.method.teachers.vllm_backend import VLLMTeacher

        return VLLMTeacher(teacher, options)
    from twt.method.teachers.openai_backend import OpenAITeacher

    return OpenAITeacher(teacher, options)
