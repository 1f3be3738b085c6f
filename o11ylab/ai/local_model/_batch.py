"""Batching: concurrent greedy chat requests answered by one ``generate`` call, concurrent
embedding requests by one ``encode`` (``LocalEmbedder.batched_embed``).

``Batcher`` (one per model) holds the queue; ``BatchJob`` is one waiting request; the chat and
embedding batches differ only in what runs (``_run_batch`` here, ``_embedder._embed_batch``).

A request that arrives while the model is busy waits in a queue; when the model is free, up to
``MAX_BATCH`` waiting requests run together, left-padded with an attention mask, to the longest
``max_new_tokens`` among them. A batch is whatever queued while the previous generation ran;
the collection window (``WINDOW_S``, 10 ms) is used only right after a batch, waiting for as
many requests as were in flight while it ran, so a lone client's request starts at once and
costs one thread hand-off. A lone client's request runs exactly the unbatched path
(``TokenStream``; ``LocalEmbedder.embed``); one left alone after waiting for company runs as a
batch of one. An embedding batch is up to ``MAX_BATCH`` requests, whatever number of texts each
holds: their texts go through one ``encode``, which pads each of its own mini-batches with a
mask.

Each row ends on its own: at its end-of-sequence token (``generate`` pads it afterwards), at its
own ``max_new_tokens`` or stop string, or when its client went away (a per-row stopping
criterion); its tokens are cut where it ended, so its text, token count and finish reason are
those it gets alone. A request is answered as soon as its own row ends, while the rest of its
batch goes on: a short answer batched with a long one does not wait for it. Each request keeps
its own span (in its caller's trace, ending with its row), usage and metrics.
Only greedy requests are batched: sampled ones (temperature above 0) and streams run alone.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from opentelemetry import context as otel_context

from ... import semconv
from ._generation import Generation, _Request
from ._stream import TokenStream, _TokenClock

if TYPE_CHECKING:
    from ._engine import LocalModel

# Rows per generate. With 8, 50 clients ran in batches of 8 (280 of 320 requests); with 32,
# mostly of 25, the two halves of the clients taking turns (10 clients: 5 and 5 either way).
# The tiny model's 16 tokens take 13 ms for 1 row, 17 ms for 10, 26 ms for 32 (one thread),
# so the rows nearly come free: 32 served 50 clients 8% faster than 16 (173 / 160 req/s, p99
# 586 / 656 ms, in one interleaved bench_serve_throughput run).
MAX_BATCH = 32
# After a batch, its clients send their next requests at about the same time, but the first
# would find the model free and run alone while the others queue behind it: so the model waits
# up to this long for as many requests as were in flight (running or waiting) while the last
# batch ran. Waiting only for the last batch's size, 10 clients settled into two batches of 5
# taking turns (280 of 400 batches). A lone client (one request in flight) never waits.
WINDOW_S = 0.010
# How long the batch loop leaves the model to a lone request handed to its own thread, at most:
# a bound in case that thread never gets to the model (it sets ``took_model`` when it does).
_HANDOFF_TIMEOUT_S = 1.0


class BatchJob:
    """One request that waits in a ``Batcher``'s queue for its turn on the model: ``_wait_turn``
    queues it (once) and returns True when it is to run alone, the unbatched way, on the
    caller's thread; otherwise its batch's answer is then in ``_result`` (or it raises the
    batch's error)."""

    def __init__(self, batcher: Batcher[Any]) -> None:
        self.submitted = 0.0
        # Set by the unbatched path once it holds the model's lock (or when it gave up).
        self.took_model = threading.Event()
        self._batcher = batcher
        self._started = False
        self._start_lock = threading.Lock()
        self._decided = threading.Event()
        self._solo = False
        self._result: Any = None
        self._error: BaseException | None = None

    def _wait_turn(self) -> bool:
        with self._start_lock:
            if not self._started:
                self._started = True
                self.submitted = time.perf_counter()
                self._batcher.submit(self)
        self._decided.wait()
        if self._solo:
            return True
        if self._error is not None:
            raise self._error
        return False

    def _run_alone(self) -> None:
        self._solo = True
        self._decided.set()

    def _finish(self, result: Any, error: BaseException | None) -> None:
        """Hand the request its answer (or error); the first call wins: a chat row handed back
        as soon as it ended is not overwritten when its batch ends (or fails) later."""
        with self._start_lock:
            if self._decided.is_set():
                return
            self._result, self._error = result, error
            self._decided.set()
        self._batcher._answered()


class BatchedChat(BatchJob):
    """One non-streamed chat request: iterate it (it yields nothing) to wait for its answer;
    ``result`` is then its ``Generation``; ``cancel()`` stops its row at the next token. It has
    the interface of ``TokenStream`` that the endpoint uses."""

    def __init__(self, engine: LocalModel, request: _Request, parent: Any) -> None:
        super().__init__(batcher_of(engine, _run_batch))
        self.request = request
        self.parent = parent
        # The path when it runs alone.
        self.stream = TokenStream(engine, request, parent, took_model=self.took_model)
        self.cancel_event = self.stream._cancel.event

    @property
    def result(self) -> Generation | None:
        found: Generation | None = self.stream.result if self._solo else self._result
        return found

    @property
    def input_tokens(self) -> int:
        return self.request.input_tokens[0]

    def cancel(self) -> None:
        self.cancel_event.set()

    def __iter__(self) -> BatchedChat:
        return self

    def __next__(self) -> str:
        if self._wait_turn():
            return next(self.stream)  # its own thread runs the unbatched stream
        raise StopIteration


Job = TypeVar("Job", bound=BatchJob)


class Batcher(Generic[Job]):
    """The queue of one model's waiting requests and the thread that runs them in batches
    (``run_batch(owner, jobs)``: one result per job, called holding ``owner.lock``; it may
    answer a job early with ``job._finish``, which the batch's end then leaves as it is)."""

    def __init__(self, owner: Any, run_batch: Callable[[Any, list[Job]], list[Any]]) -> None:
        self._owner = owner
        self._run_batch = run_batch
        self._pending: list[Job] = []
        self._ready = threading.Condition()
        self._worker: threading.Thread | None = None
        self._running = 0  # requests of the batch last taken not answered yet
        self._in_flight = 1  # the most requests running and waiting at once since it began
        self._ended = 0.0  # monotonic time the last batch ended (this loop's own)

    def submit(self, job: Job) -> None:
        with self._ready:
            self._pending.append(job)
            # The last batch counts while the model is busy (a lone request's run included).
            running = self._running if self._owner.lock.locked() else 0
            self._in_flight = max(self._in_flight, running + len(self._pending))
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._loop, name="o11ylab-batch", daemon=True
                )
                self._worker.start()
            self._ready.notify()

    def _answered(self) -> None:
        """One request of the running batch has its answer: its client may come back while the
        rest of the batch runs, and must not be counted in flight twice (the next batch would
        wait its whole window for a request that does not exist)."""
        with self._ready:
            self._running = max(0, self._running - 1)

    def _loop(self) -> None:
        lock = self._owner.lock
        while True:
            with self._ready:
                while not self._pending:
                    self._ready.wait()
            lock.acquire()  # while another call runs the model, requests keep queueing
            with self._ready:
                # See WINDOW_S. Clients come back together only right after a batch: a request
                # that finds the model idle for longer starts a new burst and waits for no one.
                returning = time.monotonic() - self._ended <= WINDOW_S
                wanted = min(self._in_flight, MAX_BATCH) if returning else 1
                deadline = time.monotonic() + WINDOW_S
                while len(self._pending) < wanted and (left := deadline - time.monotonic()) > 0:
                    self._ready.wait(left)
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                self._running = len(batch)
                self._in_flight = self._running + len(self._pending)
            if len(batch) == 1 and wanted == 1:  # a lone client: the unbatched path
                lock.release()
                batch[0]._run_alone()
                # It takes the model on its own thread. A Lock is not fair: this loop, already
                # running, would take it back first for a request queued meanwhile, batch after
                # batch, whenever that thread was slow to start (a request waited ~250 ms at 10
                # clients on a loaded machine). So the loop waits until it has the model.
                batch[0].took_model.wait(_HANDOFF_TIMEOUT_S)
                continue
            # A request left alone after waiting for company runs as a batch of one, here, on
            # the lock this thread holds: handed to its own thread instead, it had to win the
            # lock back from this loop, which took it again first for the next batch, up to
            # ten times in a row (p99 at 10 clients 255 ms against 68).
            try:
                results = self._run_batch(self._owner, batch)
            except BaseException as exc:  # noqa: BLE001 - every waiting request hears of it
                for job in batch:
                    job._finish(None, exc)
            else:
                for job, result in zip(batch, results, strict=True):
                    job._finish(result, None)
            finally:
                self._ended = time.monotonic()
                lock.release()


_BATCHERS_LOCK = threading.Lock()


def batcher_of(owner: Any, run_batch: Callable[[Any, list[Job]], list[Any]]) -> Batcher[Job]:
    """``owner``'s batcher (kept in its ``_batcher``), made on its first batched request."""
    with _BATCHERS_LOCK:
        found: Batcher[Job] | None = owner._batcher
        if found is None:
            found = Batcher(owner, run_batch)
            owner._batcher = found
        return found


class _RowEnds:
    """A stopping criterion that ends each row at its end-of-sequence token, its own
    max_new_tokens or stop strings, or cancellation, and hands the row's request its answer
    there and then (``rows.finish``), while the other rows go on."""

    def __init__(self, engine: LocalModel, rows: _Rows) -> None:
        from transformers import StopStringCriteria

        batch = rows.batch
        self.rows = rows
        self.width = rows.width
        self.eos = engine._eos_ids
        self.limits = [job.request.max_new_tokens for job in batch]
        self.cancels = [job.cancel_event for job in batch]
        self.stops = [
            StopStringCriteria(engine.tokenizer, job.request.stop) if job.request.stop else None
            for job in batch
        ]
        self.ends: list[int | None] = [None] * len(batch)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        new = int(input_ids.shape[1]) - self.width
        last = input_ids[:, -1].tolist()  # one copy from the device a step, not one per row
        for row, end in enumerate(self.ends):
            if end is not None:
                continue
            stop = self.stops[row]
            if (
                new >= self.limits[row]
                or last[row] in self.eos
                or self.cancels[row].is_set()
                or (stop is not None and bool(stop(input_ids[row : row + 1], scores)[0]))
            ):
                self.ends[row] = new
                self.rows.finish(row, input_ids, new)
        return torch.tensor([end is not None for end in self.ends], device=input_ids.device)


class _Rows:
    """The requests of one batch's ``generate``, each answered once its own row has ended."""

    def __init__(
        self,
        engine: LocalModel,
        batch: list[BatchedChat],
        calls: list[Any],
        input_ids: Any,
        mask: Any,
    ) -> None:
        self.engine = engine
        self.batch = batch
        self.calls = calls  # one per request when the instrumentor is on, else none
        self.input_ids, self.mask = input_ids, mask  # the left-padded prompts, and their mask
        self.width = int(input_ids.shape[1])
        self.clock = _TokenClock()
        self.results: list[Generation | None] = [None] * len(batch)
        self.ends = _RowEnds(engine, self)  # its stop strings take a while to prepare
        self.started = time.perf_counter()  # made right before generate

    def finish(self, row: int, sequences: Any, ended_at: int | None, final: bool = False) -> None:
        """Answer row ``row``'s request from ``sequences`` (``ended_at`` new tokens; None: the
        whole batch ran out first) and end its span. Inside ``generate`` a failure here leaves
        the row to the batch's end (``final``), and never stops the other rows."""
        if self.results[row] is not None:
            return
        try:
            result = self._answer(row, sequences, ended_at)
        except Exception:
            if final:
                raise
            return
        self.results[row] = result
        self.batch[row]._finish(result, None)

    def _answer(self, row: int, sequences: Any, ended_at: int | None) -> Generation:
        engine, job = self.engine, self.batch[row]
        request = job.request
        width = self.width
        limit = ended_at if ended_at is not None else request.max_new_tokens
        kept = sequences[row, width : width + limit]
        text, count, finish = engine._decode(request, kept.tolist())
        if _was_cancelled(job, finish, count):
            finish = "cancelled"
        now = time.perf_counter()
        # The first token's time: the streamer hears of each step after the stopping criteria.
        first = self.clock.times[0] if self.clock.times else now
        result = Generation(
            text,
            engine.name,
            request.input_tokens[0],
            count,
            finish,
            first - job.submitted,
            now - job.submitted,
        )
        if row < len(self.calls):
            self._end_span(row, sequences[row : row + 1, : width + int(kept.shape[0])], first)
            call = self.calls[row]
            if call.recording and finish == "cancelled":
                call.end_attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] = ["cancelled"]
            end_call(call, None)
        return result

    def _end_span(self, row: int, sequences: Any, first: float) -> None:
        from ...instrumentation.transformers import _count

        call, request = self.calls[row], self.batch[row].request
        call.outcome.duration = time.perf_counter() - self.started
        call.first_token_at(first)
        row_kwargs = {
            "input_ids": self.input_ids[row : row + 1],
            "attention_mask": self.mask[row : row + 1],
            "max_new_tokens": request.max_new_tokens,
            "pad_token_id": self.engine.tokenizer.pad_token_id,
            "do_sample": False,
            **({"stop_strings": request.stop} if request.stop else {}),
        }
        try:
            _count(call, self.engine.model, (), row_kwargs, sequences, None)
        except Exception:  # noqa: BLE001 - a span without counts, never a failed request
            pass
        if call.recording:
            call.end_attributes[semconv.LOCAL_BATCH_SIZE] = len(self.batch)

    def open_calls(self) -> list[Any]:
        return [call for row, call in enumerate(self.calls) if self.results[row] is None]


def _run_batch(engine: LocalModel, batch: list[BatchedChat]) -> list[Generation]:
    """Answer the batch's requests with one greedy ``generate`` (the caller holds the lock):
    each request is answered when its row ends, the rest once ``generate`` returns."""
    import torch
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled
    from transformers import StoppingCriteriaList

    from ...instrumentation._local import ModelCall, SpanNotes
    from ...instrumentation.transformers import TransformersInstrumentor, _model_attributes
    from ._instrument import _ensure_instrumented

    _ensure_instrumented(**engine._providers)
    locked = time.perf_counter()
    instruments = TransformersInstrumentor()._instruments if is_instrumentation_enabled() else None
    calls: list[ModelCall] = []
    for job in batch:  # one span per request, in its caller's trace
        notes = SpanNotes(**engine._note_fields(job.request, locked - job.submitted))
        if instruments is not None:
            attach = otel_context.attach(job.parent)
            try:
                calls.append(
                    ModelCall(
                        instruments,
                        semconv.CHAT_OPERATION,
                        engine.name,
                        _model_attributes(engine.model),
                        notes,
                    )
                )
            finally:
                otel_context.detach(attach)
    width = max(int(job.request.input_ids.shape[1]) for job in batch)
    pad = engine.tokenizer.pad_token_id
    input_ids = torch.full((len(batch), width), pad, dtype=batch[0].request.input_ids.dtype)
    mask = torch.zeros((len(batch), width), dtype=batch[0].request.attention_mask.dtype)
    for row, job in enumerate(batch):
        length = int(job.request.input_ids.shape[1])
        input_ids[row, width - length :] = job.request.input_ids[0]
        mask[row, width - length :] = job.request.attention_mask[0]
    rows = _Rows(engine, batch, calls, input_ids, mask)
    ends = rows.ends
    with for_requests(calls, rows.open_calls), torch.inference_mode():
        output = engine.model.generate(
            input_ids=input_ids.to(engine.device),
            attention_mask=mask.to(engine.device),
            max_new_tokens=max(ends.limits),
            pad_token_id=pad,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            streamer=rows.clock,
            stopping_criteria=StoppingCriteriaList([ends]),
        )
    try:
        for row in range(len(batch)):  # rows that ran to the batch's end, or failed to finish
            rows.finish(row, output, ends.ends[row], final=True)
    except BaseException as exc:
        for call in rows.open_calls():
            end_call(call, exc)
        raise
    return [result for result in rows.results if result is not None]


def _was_cancelled(job: BatchedChat, finish: str, count: int) -> bool:
    return job.cancel_event.is_set() and finish != "stop" and count < job.request.max_new_tokens


@contextlib.contextmanager
def for_requests(
    calls: list[Any], still_open: Callable[[], list[Any]] | None = None
) -> Iterator[None]:
    """Around the one model call that answers a batch: the instrumentor leaves it to the
    requests' own spans (``calls``; an active call makes it step aside), and its error ends
    each of them that is still open (``still_open()``; default: all)."""
    from ...instrumentation._local import _ACTIVE

    active = _ACTIVE.set(calls[0]) if calls else None
    try:
        yield
    except BaseException as exc:
        for call in still_open() if still_open is not None else calls:
            end_call(call, exc)
        raise
    finally:
        if active is not None:
            _ACTIVE.reset(active)


def end_call(call: Any, error: BaseException | None) -> None:
    """End one request's span; telemetry never fails the requests (as ``ModelCall.__exit__``)."""
    try:
        call.end(error)
    except Exception:  # noqa: BLE001 - a span that could not be finished, not a failed answer
        if call.span.is_recording():
            call.span.end()
