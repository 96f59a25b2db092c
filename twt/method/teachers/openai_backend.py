"""The openai backend: any OpenAI-compatible endpoint (a vLLM server, KServe, a hosted API).

One request per prompt asks for its ``n`` completions; at most ``max_concurrency`` requests are in flight
(an ``asyncio.Semaphore``). The ``openai`` SDK retries 429, 5xx, timeouts and connection errors up to
``max_retries`` times with exponential backoff (honouring ``retry-after``); each attempt times out after
``timeout_s``. What still fails raises ``TeacherRequestError`` naming the endpoint and the status.

``openai_api="completions"`` (default) posts the raw prompt to ``/v1/completions`` with ``logprobs=1``;
``"chat"`` posts it as one user message to ``/v1/chat/completions`` (``logprobs=true``) for chat-only servers.
The API key is read from the environment variable named by ``api_key_env``; none named sends "EMPTY" (what a
vLLM server without ``--api-key`` expects). Token counts come from the returned log-probs; a server that
returns none gives ``usage.completion_tokens / n`` (rounded) and ``logprob=None``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
from typing import Any

from twt.core.schema import TeacherConfig
from twt.method.teachers.interface import (
    BackendOptions,
    Generation,
    TeacherBackend,
    TeacherBackendError,
    TeacherRequestError,
    stream_seed,
)


class OpenAITeacher(TeacherBackend):
    """``TeacherBackend`` over an OpenAI-compatible HTTP endpoint."""

    def __init__(self, teacher: TeacherConfig, options: BackendOptions):
        super().__init__(teacher, options)
        route = "chat/completions" if options.openai_api == "chat" else "completions"
        self.endpoint = f"{teacher.base_url.rstrip('/')}/{route}"
        self.api_key = "EMPTY"
        if teacher.api_key_env:
            key = os.environ.get(teacher.api_key_env)
            if not key:
                raise TeacherBackendError(
                    f"teacher {teacher.name!r}: environment variable {teacher.api_key_env} (api_key_env) "
                    "is not set"
                )
            self.api_key = key
        self.retries_seen = 0  # requests the SDK retried (visible to tests and logs)

    def _generate(
        self, prompts: list[str], n: int, temperature: float, seed: int, max_new_tokens: int
    ) -> list[list[Generation]]:
        work = self._generate_all(prompts, n, temperature, seed, max_new_tokens)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(work)
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:  # called from inside an event loop
            return pool.submit(asyncio.run, work).result()

    async def _generate_all(
        self, prompts: list[str], n: int, temperature: float, seed: int, max_new_tokens: int
    ) -> list[list[Generation]]:
        from openai import AsyncOpenAI

        limit = asyncio.Semaphore(self.teacher.max_concurrency)
        async with AsyncOpenAI(
            base_url=self.teacher.base_url,
            api_key=self.api_key,
            timeout=self.teacher.timeout_s,
            max_retries=self.options.max_retries,
        ) as client:

            async def one(index: int, prompt: str) -> list[Generation]:
                async with limit:
                    return await self._request(
                        client, prompt, n, temperature, stream_seed("twt-sample", seed, index), max_new_tokens
                    )

            tasks = [asyncio.ensure_future(one(i, p)) for i, p in enumerate(prompts)]
            try:
                return list(await asyncio.gather(*tasks))
            finally:
                for task in tasks:
                    task.cancel()

    async def _request(
        self, client: Any, prompt: str, n: int, temperature: float, seed: int, max_new_tokens: int
    ) -> list[Generation]:
        import openai

        common = {
            "model": self.teacher.model,
            "n": n,
            "temperature": temperature,
            "max_tokens": max_new_tokens,
            "seed": seed,
        }
        if self.options.stop:
            common["stop"] = list(self.options.stop)
        if temperature > 0:
            common["top_p"] = self.teacher.top_p
        try:
            if self.options.openai_api == "chat":
                raw = await client.chat.completions.with_raw_response.create(
                    messages=[{"role": "user", "content": prompt}], logprobs=True, **common
                )
            else:
                raw = await client.completions.with_raw_response.create(prompt=prompt, logprobs=1, **common)
            self.retries_seen += raw.retries_taken
            response = raw.parse()
        except openai.APIStatusError as err:
            raise TeacherRequestError(
                f"teacher {self.teacher.name!r}: {self.endpoint} failed after "
                f"{self.options.max_retries} retries: HTTP {err.status_code}: {self._masked(err.message)}"
            ) from None
        except openai.APITimeoutError:
            raise TeacherRequestError(
                f"teacher {self.teacher.name!r}: {self.endpoint} timed out after "
                f"{self.teacher.timeout_s} s ({self.options.max_retries} retries)"
            ) from None
        except openai.APIConnectionError as err:
            raise TeacherRequestError(
                f"teacher {self.teacher.name!r}: cannot reach {self.endpoint} after "
                f"{self.options.max_retries} retries: {err.__cause__ or err}"
            ) from None
        except (openai.APIResponseValidationError, json.JSONDecodeError, ValueError) as err:
            raise TeacherRequestError(
                f"teacher {self.teacher.name!r}: {self.endpoint} sent a response that is "
                f"not valid JSON of the expected shape: {err}"
            ) from None
        return self._to_generations(response, n)

    def _masked(self, text: str) -> str:
        """``text`` with the API key blanked out (some servers echo the key they refuse)."""
        return text.replace(self.api_key, "***") if self.api_key and self.api_key != "EMPTY" else text

    def _to_generations(self, response: Any, n: int) -> list[Generation]:
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or len(choices) != n:
            got = len(choices) if isinstance(choices, list) else "no"
            raise TeacherRequestError(
                f"teacher {self.teacher.name!r}: {self.endpoint} returned {got} choices, "
                f"expected {n} (body: {str(response)[:200]!r})"
            )
        usage = getattr(response, "usage", None)
        fallback_tokens = round(usage.completion_tokens / n) if usage and usage.completion_tokens else 0
        out = []
        for choice in sorted(choices, key=lambda c: c.index or 0):
            if self.options.openai_api == "chat":
                text = choice.message.content or ""
                token_logprobs = [t.logprob for t in choice.logprobs.content] if choice.logprobs else None
            else:
                text = choice.text or ""
                token_logprobs = choice.logprobs.token_logprobs if choice.logprobs else None
            known = [lp for lp in token_logprobs or [] if lp is not None]
            out.append(
                Generation(
                    text=text,
                    tokens=len(token_logprobs) if token_logprobs else fallback_tokens,
                    finish_reason="length" if choice.finish_reason == "length" else "stop",
                    logprob=float(sum(known)) if token_logprobs else None,
                )
            )
        return out
