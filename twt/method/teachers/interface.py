"""What the teacher backends share and the package's ``load_teacher`` returns: the ``Generation`` record, the
errors, ``BackendOptions``, the ``TeacherBackend`` base class (``generate``'s defaults, written once) and the
seed and stop-string helpers. The backends and the package import this module; it imports none of them."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass

from twt.core.schema import TeacherConfig

OPENAI_APIS = ("completions", "chat")


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


@dataclass(frozen=True)
class BackendOptions:
    """How a backend runs in this process, beside the teacher's settings (``TeacherConfig``): none of these
    is a setting of a run, so the schema has no field for them.

    Attributes:
        device: "cpu", "cuda", "cuda:1", ...; None picks CUDA when available (transformers).
        stop: strings that end a completion, not included in the text (default none: stop at EOS only).
        static_cache: transformers on CUDA: static KV cache with a compiled decode step; the first batch of
            each shape pays the compile (ignored on CPU).
        openai_api: "completions" (``/v1/completions``, raw prompt) | "chat" (``/v1/chat/completions``, the
            prompt as one user message, for chat-only servers).
        max_retries: openai: retries with exponential backoff on 429, 5xx, timeouts and connection errors.
    """

    device: str | None = None
    stop: tuple[str, ...] = ()
    static_cache: bool = False
    openai_api: str = "completions"
    max_retries: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.openai_api not in OPENAI_APIS:
            raise ValueError(f"openai_api is {self.openai_api!r}; expected one of {OPENAI_APIS}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")


class TeacherBackend(ABC):
    """A loaded teacher. ``generate`` fills what a call leaves out from the teacher's settings; a backend
    implements ``_generate``. (A test double needs only a ``generate`` of the same signature.)"""

    def __init__(self, teacher: TeacherConfig, options: BackendOptions):
        self.teacher = teacher
        self.options = options

    def generate(
        self,
        prompts: list[str],
        *,
        n: int = 1,
        temperature: float | None = None,
        seed: int | None = None,
        max_new_tokens: int | None = None,
    ) -> list[list[Generation]]:
        """``n`` completions per prompt, in prompt order; ``temperature=0`` is greedy. Temperature, seed and
        budget default to the teacher's."""
        return self._generate(
            list(prompts),
            n,
            self.teacher.temperature if temperature is None else temperature,
            self.teacher.seed if seed is None else seed,
            max_new_tokens or self.teacher.max_new_tokens,
        )

    @abstractmethod
    def _generate(
        self, prompts: list[str], n: int, temperature: float, seed: int, max_new_tokens: int
    ) -> list[list[Generation]]:
        """``generate`` with every argument given."""


def stream_seed(*parts: int | str) -> int:
    """A 31-bit seed derived from ``parts`` (stable across processes and Python versions)."""
    digest = hashlib.blake2b(":".join(str(part) for part in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def truncate_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Cut ``text`` before the first stop string; returns the text and whether one was found."""
    cut = min((pos for pos in (text.find(s) for s in stop if s) if pos >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
