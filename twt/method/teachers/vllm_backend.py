"""The vllm backend: offline ``vllm.LLM`` on a GPU node (install with ``pip install 'twt[vllm]'``).

One engine per teacher, spanning ``TeacherConfig.tensor_parallel_size`` GPUs; vLLM schedules all prompts of a
``generate`` call with continuous batching and paged attention, so ``batch_size`` does not apply. Every prompt
gets its own ``SamplingParams.seed`` derived from (seed, prompt index), so its ``n`` samples do not depend on
which other prompts share the call. ``logprobs=0`` asks vLLM for the log-prob of each sampled token;
vLLM (v1 engine, default ``logprobs_mode="raw_logprobs"``) reports them under the raw model distribution,
as the transformers backend does, and sums them in ``CompletionOutput.cumulative_logprob``.
"""

from __future__ import annotations

from typing import Any

from twt.core.model_cache import local_model
from twt.core.schema import TeacherConfig
from twt.method.teachers.interface import (
    BackendOptions,
    Generation,
    TeacherBackend,
    TeacherBackendError,
    stream_seed,
)


class VLLMTeacher(TeacherBackend):
    """``TeacherBackend`` over an offline ``vllm.LLM`` engine."""

    def __init__(self, teacher: TeacherConfig, options: BackendOptions):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as err:
            raise TeacherBackendError(
                f"teacher {teacher.name!r}: backend 'vllm' needs the vllm package (pip install 'twt[vllm]', "
                f"a CUDA build), which is not importable here ({err}); use 'transformers' or 'openai'"
            ) from err
        super().__init__(teacher, options)
        self._sampling_params = SamplingParams
        self.llm = LLM(
            model=local_model(teacher.model),  # s3:// and file:// through twt.core.store
            tensor_parallel_size=teacher.tensor_parallel_size,
            dtype="auto" if teacher.dtype == "auto" else teacher.dtype,
            seed=teacher.seed,
        )

    def sampling_params(
        self, index: int, *, n: int, temperature: float, seed: int, max_new_tokens: int
    ) -> Any:
        """The ``SamplingParams`` for prompt ``index`` (greedy when temperature is 0)."""
        return self._sampling_params(
            n=n,
            temperature=temperature,
            top_p=self.teacher.top_p if temperature > 0 else 1.0,
            max_tokens=max_new_tokens,
            seed=stream_seed("twt-sample", seed, index),
            logprobs=0,
            stop=list(self.options.stop) or None,
        )

    def _generate(
        self, prompts: list[str], n: int, temperature: float, seed: int, max_new_tokens: int
    ) -> list[list[Generation]]:
        params = [
            self.sampling_params(i, n=n, temperature=temperature, seed=seed, max_new_tokens=max_new_tokens)
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        return [[to_generation(choice) for choice in output.outputs] for output in outputs]


def to_generation(choice: Any) -> Generation:
    """A vLLM ``CompletionOutput`` as a ``Generation`` (the stop string is already cut from its text)."""
    reason = "length" if choice.finish_reason == "length" else "stop"
    logprob = choice.cumulative_logprob
    return Generation(
        text=choice.text,
        tokens=len(choice.token_ids),
        finish_reason=reason,
        logprob=None if logprob is None else float(logprob),
    )
