"""The transformers backend: a local Hugging Face directory, batched, left-padded, KV-cached.

Prompts are sorted by token length (longest first) so a batch holds prompts of similar length and little
padding; results come back in prompt order. On CUDA the model runs in bf16 and, with
``BackendOptions.static_cache``, with a static KV cache whose decode step transformers compiles (prompts are
then padded to a multiple of 64 tokens so few shapes get compiled).

Sampling is keyed: the token drawn at step ``t`` for sample ``j`` of prompt ``i`` is
``argmax(logits / T + top_p_mask + G)`` where ``G`` is Gumbel noise computed by a hash of
``(seed, i, j, t, token id)`` (the Gumbel-max trick: an exact draw from ``softmax(logits / T)`` restricted to
the top-p set). The noise does not come from a stateful RNG, so a completion depends on (seed, prompt index,
sample index) only — not on the batch size, the batch it landed in, its neighbours' lengths or the device —
up to floating-point differences in the logits themselves. ``model.generate`` runs in greedy mode and picks
the token this processor chose.

Log-probabilities: ``Generation.logprob`` sums ``log_softmax(raw logits)`` of the chosen tokens, i.e. the
model's own distribution at temperature 1 without the top-p cut, so confidences are comparable across teachers
sampled at different temperatures. Only one (batch,) vector per step is kept, never the (batch, vocab) scores.
"""

from __future__ import annotations

import warnings

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteriaList,
    StopStringCriteria,
)
from transformers.generation.logits_process import TopPLogitsWarper

from twt.core.model_cache import local_model
from twt.core.schema import TeacherConfig
from twt.core.store import StoreError
from twt.method.teachers.interface import (
    BackendOptions,
    Generation,
    TeacherBackend,
    TeacherBackendError,
    stream_seed,
    truncate_at_stop,
)

_MASK32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (hash-prospector's 2-round xorshift-multiply) on int64 tensors in [0, 2**32).

    Both multipliers are below 2**31, so every product stays below 2**63: exact int64 arithmetic anywhere.
    """
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _MASK32
    return x ^ (x >> 15)


def keyed_gumbel(keys: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """Gumbel(0, 1) noise of shape (len(keys), vocab), a pure function of (key, step, token id)."""
    step_key = stream_seed("step", step)
    base = _hash32((keys ^ step_key) & _MASK32)
    token_ids = torch.arange(vocab, device=keys.device, dtype=torch.int64)
    bits = _hash32((base[:, None] + token_ids[None, :] * 0x9E3779B9) & _MASK32)
    uniform = ((bits >> 8).to(torch.float32) + 0.5) * (
        1.0 / (1 << 24)
    )  # 24 bits: exact in float32, in (0, 1)
    return -torch.log(-torch.log(uniform))


class KeyedSampler(LogitsProcessor):
    """Chooses each row's next token (keyed Gumbel-max, or argmax when greedy) and records its log-prob.

    Returns scores that are 0 at the chosen token and -inf elsewhere, so greedy ``generate`` takes it.
    """

    def __init__(self, keys: torch.Tensor, temperature: float, top_p: float):
        self.keys = keys
        self.temperature = temperature
        self.top_p = TopPLogitsWarper(top_p) if temperature > 0 and top_p < 1.0 else None
        self.step = 0
        self.token_logprobs: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float()
        logprobs = torch.log_softmax(scores, dim=-1)
        if self.temperature == 0:
            choice = scores.argmax(dim=-1)
        else:
            tempered = scores / self.temperature
            if self.top_p is not None:
                tempered = self.top_p(input_ids, tempered)
            choice = (tempered + keyed_gumbel(self.keys, self.step, scores.shape[-1])).argmax(dim=-1)
        self.token_logprobs.append(logprobs.gather(1, choice[:, None]).squeeze(1))
        self.step += 1
        return torch.full_like(scores, float("-inf")).scatter_(1, choice[:, None], 0.0)


class TransformersTeacher(TeacherBackend):
    """``TeacherBackend`` over ``AutoModelForCausalLM`` (see the module docstring for the sampling scheme)."""

    def __init__(self, teacher: TeacherConfig, options: BackendOptions):
        super().__init__(teacher, options)
        self.device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        on_gpu = self.device.type == "cuda"
        dtype = {
            "auto": torch.bfloat16 if on_gpu else torch.float32,
            "bfloat16": torch.bfloat16,
            "float16": torch.float16,
            "float32": torch.float32,
        }[teacher.dtype]
        try:
            path = local_model(teacher.model)  # s3:// and file:// through twt.core.store
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except (OSError, ValueError, StoreError) as err:
            raise TeacherBackendError(
                f"teacher {teacher.name!r}: cannot load {teacher.model!r}: {err}"
            ) from err
        self.model = model.to(self.device).eval()
        self.tokenizer.padding_side = "left"
        eos = model.generation_config.eos_token_id
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in eos_ids:
            eos_ids.append(self.tokenizer.eos_token_id)
        if not eos_ids:
            raise TeacherBackendError(f"teacher {teacher.name!r}: {teacher.model} defines no EOS token")
        self.eos_ids = eos_ids
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token_id = eos_ids[0]
        self.pad_id = self.tokenizer.pad_token_id
        # The teacher's settings decide how to sample: forget the sampling defaults of generation_config.json.
        self.model.generation_config = GenerationConfig(
            eos_token_id=eos_ids, pad_token_id=self.pad_id, bos_token_id=model.generation_config.bos_token_id
        )
        self.static_cache = options.static_cache and on_gpu
        self.stop_criteria = self._stop_criteria()

    def _stop_criteria(self) -> StoppingCriteriaList | None:
        """transformers' stop-string matcher, to end rows early; some tokenizers (word-level) defeat it, and
        then rows run to EOS or the budget and ``_finish`` still cuts the text at the stop string."""
        if not self.options.stop:
            return None
        try:
            return StoppingCriteriaList([StopStringCriteria(self.tokenizer, list(self.options.stop))])
        except (ValueError, KeyError) as err:
            warnings.warn(
                f"teacher {self.teacher.name!r}: stop strings will not end generation early ({err})",
                stacklevel=2,
            )
            return None

    @torch.inference_mode()
    def _generate(
        self, prompts: list[str], n: int, temperature: float, seed: int, max_new_tokens: int
    ) -> list[list[Generation]]:
        draws = 1 if temperature == 0 else n  # greedy: one decode, copied n times
        encoded = self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        by_length = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        rows = [(i, j) for i in by_length for j in range(draws)]
        done: dict[tuple[int, int], Generation] = {}
        for start in range(0, len(rows), self.teacher.batch_size):
            batch = rows[start : start + self.teacher.batch_size]
            keys = [stream_seed("twt-sample", seed, i, j) for i, j in batch]
            outputs = self._generate_batch([encoded[i] for i, _ in batch], keys, temperature, max_new_tokens)
            done.update(zip(batch, outputs, strict=True))
        return [[done[(i, j if draws > 1 else 0)] for j in range(n)] for i in range(len(prompts))]

    def _generate_batch(
        self, ids: list[list[int]], keys: list[int], temperature: float, max_new_tokens: int
    ) -> list[Generation]:
        padded = self.tokenizer.pad(
            {"input_ids": ids},
            padding=True,
            return_tensors="pt",
            pad_to_multiple_of=64 if self.static_cache else None,
        )
        input_ids = padded["input_ids"].to(self.device)
        sampler = KeyedSampler(
            torch.tensor(keys, dtype=torch.int64, device=self.device), temperature, self.teacher.top_p
        )
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            cache_implementation="static" if self.static_cache else None,
        )
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=padded["attention_mask"].to(self.device),
            generation_config=config,
            logits_processor=LogitsProcessorList([sampler]),
            stopping_criteria=self.stop_criteria,
        )
        generated = out[:, input_ids.shape[1] :]
        steps = generated.shape[1]  # trailing records of undone (deferred-stop) steps are dropped
        token_logprobs = torch.stack(sampler.token_logprobs[:steps], dim=1).cpu()
        return [self._finish(row, token_logprobs[r]) for r, row in enumerate(generated.tolist())]

    def _finish(self, ids: list[int], token_logprobs: torch.Tensor) -> Generation:
        """Where one row really ended (first EOS or stop string), its text, token count and log-prob."""
        eos_at = next((t for t, token in enumerate(ids) if token in self.eos_ids), None)
        body = ids if eos_at is None else ids[:eos_at]
        text = self.tokenizer.decode(body, skip_special_tokens=True)
        length, reason = (len(ids), "length") if eos_at is None else (eos_at + 1, "stop")
        if self.options.stop:
            text, stopped = truncate_at_stop(text, self.options.stop)
            if stopped:
                length, reason = self._tokens_until_stop(body), "stop"
        return Generation(
            text=text, tokens=length, finish_reason=reason, logprob=float(token_logprobs[:length].sum())
        )

    def _tokens_until_stop(self, ids: list[int]) -> int:
        """The fewest leading tokens whose text contains a stop string (binary search over prefixes)."""
        low, high = 1, len(ids)
        while low < high:
            mid = (low + high) // 2
            _, found = truncate_at_stop(
                self.tokenizer.decode(ids[:mid], skip_special_tokens=True), self.options.stop
            )
            low, high = (low, mid) if found else (mid + 1, high)
        return low
