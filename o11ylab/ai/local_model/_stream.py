"""Streaming: the token clock, cancellation, and ``TokenStream``'s worker thread."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context

from ... import semconv
from ._generation import Generation, _Request

if TYPE_CHECKING:
    from ._engine import LocalModel


class _TokenClock:
    """A transformers streamer that timestamps every generation step (and can relay tokens).

    ``generate`` calls ``put`` once with the prompt, then once per new token (a column of the
    batch), then ``end``. ``on_token`` gets each new token's ids when streaming.
    """

    def __init__(self, on_token: Callable[[list[int]], None] | None = None) -> None:
        self.times: list[float] = []
        self._seen_prompt = False
        self._on_token = on_token

    def put(self, value: Any) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        self.times.append(time.perf_counter())
        if self._on_token is not None:
            self._on_token(value.reshape(-1).tolist())

    def end(self) -> None:
        pass


class _Cancel:
    """A stopping criterion that ends generation when the consumer goes away."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


_DONE = object()


class TokenStream:
    """Text pieces of one generation, as the model produces them.

    Nothing runs until the first piece is asked for (or ``start()``). The model runs in a
    worker thread that holds the model's lock, decodes each new token and hands text pieces
    over; the same thread ends the span and records the metrics, so the telemetry is complete
    even when the consumer stops reading. ``cancel()`` (also ``close()`` or leaving a ``with``
    block) stops the model at its next token; the span then says finish reason ``cancelled``.
    After the last piece ``result`` holds the ``Generation``.
    """

    def __init__(
        self,
        engine: LocalModel,
        request: _Request,
        parent: Any,
        took_model: threading.Event | None = None,
    ) -> None:
        self._engine = engine
        self._took_model = took_model  # set once the worker holds the model's lock (_batch)
        self._request = request
        self._parent = parent
        self._pieces: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._cancel = _Cancel()
        self._worker: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.result: Generation | None = None
        self.first_token_at: float | None = None  # perf_counter() when the first piece was ready

    @property
    def input_tokens(self) -> int:
        return self._request.input_tokens[0]

    def start(self) -> TokenStream:
        with self._start_lock:
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="o11ylab-generate", daemon=True
                )
                self._worker.start()
        return self

    def __iter__(self) -> TokenStream:
        return self

    def __next__(self) -> str:
        self.start()
        item = self._pieces.get()
        if item is _DONE:
            self._pieces.put(_DONE)  # later calls stop too
            raise StopIteration
        if isinstance(item, BaseException):
            self._pieces.put(_DONE)
            raise item
        return str(item)

    def cancel(self) -> None:
        """Stop the model at its next token; returns at once."""
        self._cancel.event.set()

    def close(self) -> None:
        """Cancel and wait for the worker to end the span."""
        self.cancel()
        if self._worker is not None:
            self._worker.join()

    def wait(self, timeout: float | None = None) -> Generation | None:
        """Wait for the generation to finish (start it first); return its ``Generation``."""
        self.start()
        assert self._worker is not None
        self._worker.join(timeout)
        return self.result

    def __enter__(self) -> TokenStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _work(self) -> None:
        engine, request = self._engine, self._request
        started = time.perf_counter()
        token_context = otel_context.attach(self._parent)  # the caller's span is the parent
        tokens: list[int] = []
        state = {"emitted": "", "finish": "length"}
        eos = engine._eos_ids

        def on_token(ids: list[int]) -> None:
            token = int(ids[0])
            tokens.append(token)
            if token in eos:
                state["finish"] = "stop"
                return
            text = str(
                engine.tokenizer.decode(
                    [t for t in tokens if t not in eos], skip_special_tokens=True
                )
            )
            if text.endswith("\ufffd"):
                return  # half of a multi-byte character: wait for the rest
            for stop in request.stop:
                cut = text.find(stop)
                if cut >= 0:
                    text, state["finish"] = text[:cut], "stop"
            piece = text[len(state["emitted"]) :]
            if piece and text.startswith(state["emitted"]):
                if self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
                state["emitted"] = text
                self._pieces.put(piece)

        def cancelled() -> bool:
            return (
                self._cancel.event.is_set()
                and state["finish"] != "stop"
                and len(tokens) < request.max_new_tokens
            )

        clock = _TokenClock(on_token)
        error: BaseException | None = None
        try:
            with engine.lock:
                if self._took_model is not None:
                    self._took_model.set()
                queue_time = time.perf_counter() - started
                with engine._notes(request, queue_time) as notes:
                    notes.on_end = lambda _outcome: (
                        {semconv.GEN_AI_RESPONSE_FINISH_REASONS: ["cancelled"]}
                        if cancelled()
                        else None
                    )
                    engine._generate_locked(request, clock, self._cancel)
            finish = "cancelled" if cancelled() else state["finish"]
            ttft = clock.times[0] - started if clock.times else None
            self.result = Generation(
                state["emitted"],
                engine.name,
                request.input_tokens[0],
                len(tokens),
                finish,
                ttft,
                time.perf_counter() - started,
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            error = exc
        finally:
            otel_context.detach(token_context)
            if self._took_model is not None:
                self._took_model.set()  # also when it failed before it got the model
            self._pieces.put(error if error is not None else _DONE)
