"""Policies loaded in this web process, and the one place /v1 runs generation on them.

Loading: a checkpoint is loaded once per process, on the first request that needs it, and kept in
a small LRU cache keyed by model version. When another version is promoted, the next request
resolves to the new version id, loads it and the old one drops out of the cache; requests still
running on the old one hold their own reference to it, so they finish on the weights they began
with and nothing in flight fails.

Concurrency: each loaded model has one generation lock, so a forward pass and its KV cache belong
to one batch at a time and two requests never interleave on a cache. Requests wait on the lock in
turn; the thread that takes it also takes the waiting non-streaming requests with the same
sampling settings (and no seed) and decodes them as one left-padded batch ("leader batching"),
which is what lets 8 concurrent clients share one decode loop. Seeded requests run alone so a seed
gives the same text however busy the server is. A stream holds the lock while it decodes, one
request at a time, in a producer thread that feeds a queue: a slow reader does not hold the lock
longer than the decoding takes, and a client that goes away stops the decoding.
"""

from __future__ import annotations

import copy
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from .errors import OpenAIError, bad_request
from .params import GenerationRequest
from .resolve import ServedModel

DEFAULT_MAX_TOKENS = 256  # when the client gives none, cut further to what the context leaves


@dataclass
class StreamDelta:
    """A piece of a stream: its text and the ids sampled since the previous piece."""

    text: str
    token_ids: list[int]


@dataclass
class StreamEnd:
    """The last item of a stream: what the decode finished with."""

    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    token_ids: list[int] = field(default_factory=list)  # the completion's ids no delta carried


GATHER_POLL_S = 0.002
GATHER_QUIET_S = 0.010  # this long without a new request ends the gathering


@dataclass
class _Job:
    prompts: list
    n: int
    config: Any  # rlhf.sampling.SamplingConfig
    result: list | None = None  # one list of Generation per prompt
    error: BaseException | None = None
    finished: bool = False

    @property
    def rows(self) -> int:
        return len(self.prompts) * self.n


@dataclass
class LoadedModel:
    served: ServedModel
    model: Any
    tokenizer: Any
    max_positions: int | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Fast tokenizers are not safe to call from two threads at once ("Already borrowed"), and the
    # decode under `lock` uses `tokenizer`; request threads count tokens on their own copy.
    counting_tokenizer: Any = None
    _count_lock: threading.Lock = field(default_factory=threading.Lock)
    _pending: list[_Job] = field(default_factory=list)
    _pending_lock: threading.Lock = field(default_factory=threading.Lock)
    # Rows of the recent decode runs, for tests and stats.
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1000))

    # ---- budget ---------------------------------------------------------------------------

    def __post_init__(self) -> None:
        if self.counting_tokenizer is None:
            self.counting_tokenizer = copy.deepcopy(self.tokenizer)

    def prompt_length(self, prompt: str | list) -> int:
        return len(self.prompt_ids(prompt))

    def prompt_ids(self, prompt: str | list) -> list[int]:
        """The ids the model sees for a prompt: the very encoding generation uses."""
        from rlhf.tokenization import encode_prompt

        return self.with_tokenizer(lambda tokenizer: encode_prompt(tokenizer, prompt))

    def prompt_text(self, prompt: str | list) -> str:
        from rlhf.tokenization import format_prompt

        return self.with_tokenizer(lambda tokenizer: format_prompt(tokenizer, prompt))

    def with_tokenizer(self, use: Any) -> Any:
        """use(tokenizer) on this request thread's side of the tokenizer (see counting_tokenizer)."""
        with self._count_lock:
            return use(self.counting_tokenizer)

    def max_new_tokens(self, request: GenerationRequest) -> int:
        """The completion budget: the client's max_tokens, which must fit in the context, or the
        default cut to what the longest prompt leaves."""
        longest = max(self.prompt_length(p) for p in request.prompts)
        param = "messages" if request.chat else "prompt"
        if self.max_positions is None:
            return request.max_tokens or DEFAULT_MAX_TOKENS
        room = self.max_positions - longest
        if room < 1:
            raise bad_request(f"This model's maximum context length is {self.max_positions} tokens; the prompt "
                              f"has {longest}.", param=param, code="context_length_exceeded")
        if request.max_tokens is None:
            return min(DEFAULT_MAX_TOKENS, room)
        if request.max_tokens > room:
            raise bad_request(
                f"This model's maximum context length is {self.max_positions} tokens. However, you requested "
                f"{longest + request.max_tokens} tokens ({longest} in the {param}, {request.max_tokens} in "
                f"the completion).", param="max_tokens", code="context_length_exceeded")
        return request.max_tokens

    # ---- batched, non-streaming --------------------------------------------------------------

    def generate(self, prompts: list, config: Any, n: int = 1) -> list:
        """n Generations per prompt, decoded in a batch with whatever compatible requests wait."""
        job = _Job(prompts=prompts, n=n, config=config)
        with self._pending_lock:
            self._pending.append(job)
        with self.lock:
            if not job.finished:  # else an earlier leader decoded it in its batch
                self._gather(job)
                self._run(self._take_batch(job))
        if job.error is not None:
            raise job.error
        return job.result

    def _gather(self, leader: _Job) -> None:
        """Wait while requests keep arriving, so clients that send at nearly the same time share
        one decode instead of alternating a batch of one with a batch of the rest. Stops after
        10 ms without a new arrival, when the batch is full, or at RLHF_SERVING_BATCH_WAIT_MS."""
        max_wait = getattr(settings, "RLHF_SERVING_BATCH_WAIT_MS", 50) / 1000
        limit = max(getattr(settings, "RLHF_SERVING_MAX_BATCH", 8), leader.rows)
        deadline = time.monotonic() + max_wait
        quiet_for, last_count = 0.0, -1
        while time.monotonic() < deadline and quiet_for < GATHER_QUIET_S:
            with self._pending_lock:
                count, rows = len(self._pending), sum(j.rows for j in self._pending)
            if rows >= limit:
                break
            quiet_for = quiet_for + GATHER_POLL_S if count == last_count else 0.0
            last_count = count
            time.sleep(GATHER_POLL_S)

    def _take_batch(self, leader: _Job) -> list[_Job]:
        limit = max(getattr(settings, "RLHF_SERVING_MAX_BATCH", 8), leader.rows)
        with self._pending_lock:
            self._pending.remove(leader)
            batch, rows = [leader], leader.rows
            if leader.config.seed is None:
                for job in list(self._pending):
                    if job.config == leader.config and rows + job.rows <= limit:
                        self._pending.remove(job)
                        batch.append(job)
                        rows += job.rows
        return batch

    def _run(self, batch: list[_Job]) -> None:
        from rlhf.sampling import generate

        flat = [p for job in batch for p in job.prompts for _ in range(job.n)]
        self.batch_sizes.append(len(flat))
        try:
            rows = generate(self.model, self.tokenizer, flat, batch[0].config, n=1, batch_size=len(flat))
            start = 0
            for job in batch:
                mine = [r[0] for r in rows[start:start + job.rows]]
                job.result = [mine[i * job.n:(i + 1) * job.n] for i in range(len(job.prompts))]
                start += job.rows
        except BaseException as exc:  # every request of the batch gets the failure
            for job in batch:
                job.error = exc
        finally:
            for job in batch:
                job.finished = True

    # ---- streaming ---------------------------------------------------------------------------

    def stream(self, prompt: str | list, config: Any) -> Iterator[StreamDelta | StreamEnd]:
        """The deltas of one completion, then a StreamEnd."""
        items: queue.Queue = queue.Queue()
        cancelled = threading.Event()
        thread = threading.Thread(target=self._produce, args=(prompt, config, items, cancelled),
                                  name=f"stream-mv{self.served.version_id}", daemon=True)
        thread.start()
        try:
            while True:
                item = items.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, StreamEnd):
                    return
        finally:
            cancelled.set()  # the client went away, or we are done: stop decoding

    def _produce(self, prompt: str | list, config: Any, items: queue.Queue, cancelled: threading.Event) -> None:
        from rlhf import sampling

        try:
            with self.lock:
                sampled: list[int] = []
                sent = 0  # ids that went out with a delta
                deltas = sampling.generate_stream(self.model, self.tokenizer, prompt, config,
                                                  on_token=sampled.append)
                while True:
                    if cancelled.is_set():
                        deltas.close()
                        return
                    try:
                        text = next(deltas)
                    except StopIteration as end:
                        final = end.value  # the stream's Generation: usage and finish reason
                        break
                    # A delta carries the ids drawn since the last one, as vLLM's chunks do.
                    items.put(StreamDelta(text, sampled[:]))
                    sent += len(sampled)
                    sampled.clear()
            # The completion's ids that no delta carried; with a stop string the ids of the text
            # cut off may have gone out already (as in vLLM's streams) and nothing is added.
            rest = sampled[:max(0, len(final.token_ids) - sent)]
            items.put(StreamEnd(final.finish_reason, final.prompt_tokens, final.completion_tokens, rest))
        except BaseException as exc:
            items.put(exc)


# ---- the process-wide cache ---------------------------------------------------------------------

_cache: OrderedDict[tuple[int, str], LoadedModel] = OrderedDict()
_cache_lock = threading.Lock()
_load_locks: dict[tuple[int, str], threading.Lock] = {}
# transformers builds a model under process-wide state (the meta-device init context), so two
# threads loading different versions at once break each other ("Cannot copy out of meta
# tensor"). Loads are rare and short next to serving; one at a time per process.
_loader_lock = threading.Lock()


def loaded_model_get(served: ServedModel) -> LoadedModel:
    """The loaded model for a version, loading it at most once per process even under concurrency."""
    key = (served.version_id, served.path)
    with _cache_lock:
        loaded = _cache.get(key)
        if loaded is not None:
            _cache.move_to_end(key)
            return loaded
        load_lock = _load_locks.setdefault(key, threading.Lock())
    with load_lock:
        with _cache_lock:
            loaded = _cache.get(key)
        if loaded is None:
            loaded = _load(served)
            with _cache_lock:
                _cache[key] = loaded
                # Evicted models stay alive while requests that took them still run.
                while len(_cache) > max(1, getattr(settings, "RLHF_SERVING_CACHE_SIZE", 2)):
                    _cache.popitem(last=False)
                _load_locks.pop(key, None)
    return loaded


def loaded_model_peek(served: ServedModel) -> LoadedModel | None:
    """The loaded model of a version if this process has it, without loading it."""
    with _cache_lock:
        return _cache.get((served.version_id, served.path))


def loaded_model_cache_clear() -> None:
    with _cache_lock:
        _cache.clear()
        _load_locks.clear()


def loaded_versions() -> list[int]:
    with _cache_lock:
        return [version_id for version_id, _ in _cache]


def _load(served: ServedModel) -> LoadedModel:
    import torch

    from rlhf.models import load_policy, resolve_device

    device = resolve_device(getattr(settings, "RLHF_SERVING_DEVICE", "") or None)
    # bf16 halves memory and is the usual serving precision on GPUs; CPUs keep fp32, which is
    # faster there for decoding small batches.
    dtype = torch.bfloat16 if device.type == "cuda" else None
    try:
        with _loader_lock:
            model, tokenizer = load_policy(served.path, device=str(device), dtype=dtype)
    except (OSError, ValueError) as exc:
        raise OpenAIError(f"Model version {served.version_id} cannot be loaded from its checkpoint: {exc}",
                          status=503, code="model_unavailable") from exc
    max_positions = getattr(model.config, "max_position_embeddings", None)
    return LoadedModel(served=served, model=model, tokenizer=tokenizer, max_positions=max_positions)
