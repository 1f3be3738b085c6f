"""What a GenAI call cost, from a bundled, versioned price table that works offline.

The table (``pricing.json`` next to this module) states its version, date and source, and gives
USD per 1M tokens: input, cached input and output for chat models, input for embedding
models. Models that o11ylab serves itself cost 0 USD. ``O11YLAB_PRICING_FILE`` names a JSON
file of the same shape whose ``models`` are merged over the bundled ones (a partial file is
fine)::

    {"version": "team-2025-09", "models": {"gpt-4o-mini": {"input": 0.1, "output": 0.4}}}

Cost reaches telemetry through ``install()``: a span hook puts the amount (and its parts) on
every ``chat``/``embeddings`` span before exporters and cell roll-ups see it, and adds it to
the ``o11ylab.gen_ai.client.cost`` counter by model. A model with no price is costed as
unknown: no amount, ``o11ylab.cost.unknown=true`` instead. Never 0, which would read as free.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from opentelemetry.trace import SpanKind

from . import semconv
from .config import ConfigError

__all__ = [
    "Cost",
    "Price",
    "PriceTable",
    "PricingError",
    "cost_of",
    "install",
    "load_table",
    "price_call",
    "register_local_server",
]

PRICING_FILE_ENV = "O11YLAB_PRICING_FILE"
_PER = 1_000_000
_KINDS = ("chat", "embeddings")
_PRICE_KEYS = {"input", "cached_input", "output", "kind", "local"}
_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|\d{4})$")


class PricingError(ConfigError):
    """The price table cannot be used. The message names the file and what is wrong in it."""


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens for one model."""

    input: float
    output: float | None = None
    cached_input: float | None = None
    kind: str = "chat"
    local: bool = False


@dataclass(frozen=True)
class PriceTable:
    version: str
    date: str
    source: str
    currency: str
    models: dict[str, Price]
    files: tuple[str, ...] = ()
    overridden: frozenset[str] = frozenset()  # entries the user's file set: they always win

    def lookup(self, model: str | None) -> tuple[str, Price] | None:
        """The entry for ``model``: exact, then case-insensitive, then without a date suffix
        (``gpt-4o-mini-2024-07-18``) or a folder/organisation prefix (``org/SmolLM2-...``)."""
        if not model:
            return None
        candidates = [model]
        base = model.rstrip("/").rsplit("/", 1)[-1]
        if base != model:
            candidates.append(base)
        for name in list(candidates):
            undated = _DATE_SUFFIX.sub("", name)
            if undated != name:
                candidates.append(undated)
        lowered = {key.lower(): key for key in self.models}
        for name in candidates:
            if name in self.models:
                return name, self.models[name]
            key = lowered.get(name.lower())
            if key is not None:
                return key, self.models[key]
        return None


@dataclass(frozen=True)
class Cost:
    """A call's cost in USD, with its parts and the table entry it was priced with."""

    amount: float
    input_amount: float
    cached_input_amount: float
    output_amount: float
    priced_as: str
    version: str
    currency: str = "USD"

    def attributes(self) -> dict[str, Any]:
        return {
            semconv.GEN_AI_USAGE_COST: self.amount,
            semconv.GEN_AI_USAGE_COST_CURRENCY: self.currency,
            semconv.GEN_AI_USAGE_COST_SOURCE: semconv.COST_SOURCE_COMPUTED,
            semconv.COST_INPUT: self.input_amount,
            semconv.COST_CACHED_INPUT: self.cached_input_amount,
            semconv.COST_OUTPUT: self.output_amount,
            semconv.COST_PRICED_AS: self.priced_as,
            semconv.PRICING_VERSION: self.version,
        }


# --- the table ----------------------------------------------------------------------------------


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _number(value: Any, where: str, origin: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
        raise PricingError(f"{origin}: {where} must be a number of USD per 1M tokens, "
                           f"not {json.dumps(value)}.")
    if value < 0:
        raise PricingError(f"{origin}: {where} is negative ({value}); prices are >= 0.")
    return float(value)


def _price(name: str, entry: Any, origin: str) -> Price:
    where = f'models["{name}"]'
    if not isinstance(entry, dict):
        raise PricingError(f"{origin}: {where} must be an object like "
                           '{"input": 0.15, "output": 0.6}.')
    unknown = sorted(set(entry) - _PRICE_KEYS)
    if unknown:
        raise PricingError(f"{origin}: {where} has unknown key(s) {', '.join(unknown)}; "
                           f"allowed: {', '.join(sorted(_PRICE_KEYS))}.")
    kind = entry.get("kind", "chat")
    if kind not in _KINDS:
        raise PricingError(f"{origin}: {where}.kind is {json.dumps(kind)}; use chat or embeddings.")
    local = entry.get("local", False)
    if not isinstance(local, bool):
        raise PricingError(f"{origin}: {where}.local must be true or false.")
    if "input" not in entry:
        raise PricingError(f"{origin}: {where} has no input price.")
    input_price = _number(entry["input"], f"{where}.input", origin)
    cached = entry.get("cached_input")
    output = entry.get("output")
    if kind == "chat" and output is None:
        raise PricingError(f"{origin}: {where} is a chat model without an output price.")
    if kind == "embeddings" and output is not None:
        raise PricingError(f"{origin}: {where} is an embedding model; it has no output price.")
    return Price(
        input=input_price,
        output=None if output is None else _number(output, f"{where}.output", origin),
        cached_input=None if cached is None else _number(cached, f"{where}.cached_input", origin),
        kind=kind,
        local=local,
    )


def _read(path: Path, origin: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PricingError(f"{origin}: no such file. Fix {PRICING_FILE_ENV} or unset it.") from None
    except OSError as exc:
        raise PricingError(f"{origin}: cannot be read ({exc.strerror or exc}).") from None
    except UnicodeDecodeError as exc:
        raise PricingError(f"{origin}: not UTF-8 text (byte {exc.start}); save it as UTF-8 JSON.") \
            from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PricingError(
            f"{origin}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}."
        ) from None
    except (ValueError, RecursionError) as exc:  # a number with thousands of digits, deep nesting
        raise PricingError(f"{origin}: not JSON o11ylab can read ({type(exc).__name__}).") from None
    if not isinstance(data, dict):
        raise PricingError(f'{origin}: the top level must be an object with "models".')
    models = data.get("models")
    if not isinstance(models, dict):
        raise PricingError(f'{origin}: needs a "models" object mapping model names to prices.')
    for key in ("version", "date", "source"):
        if key in data and not isinstance(data[key], str):
            raise PricingError(f"{origin}: {key} must be a string.")
    if data.get("currency", "USD") != "USD":
        raise PricingError(f"{origin}: only USD prices are supported, not {data['currency']!r}.")
    return data


def _bundled() -> PriceTable:
    source = resources.files("o11ylab").joinpath("pricing.json")
    data = _read(Path(str(source)), "o11ylab/pricing.json (bundled)")
    models = {name: _price(name, entry, "bundled pricing.json")
              for name, entry in data["models"].items()}
    return PriceTable(
        version=data["version"], date=data["date"], source=data["source"],
        currency="USD", models=models,
    )


def _merge(base: PriceTable, path: Path) -> PriceTable:
    origin = f"pricing file {path} ({PRICING_FILE_ENV})"
    data = _read(path, origin)
    models = dict(base.models)
    for name, entry in data["models"].items():
        models[name] = _price(name, entry, origin)
    user_version = data.get("version") or "user"
    return PriceTable(
        version=f"{base.version}+{user_version}",
        date=data.get("date", base.date),
        source=data.get("source", str(path)),
        currency="USD",
        models=models,
        files=(str(path),),
        overridden=base.overridden | frozenset(data["models"]),
    )


_CACHE: dict[tuple[str, float], PriceTable] = {}
_BUNDLED: list[PriceTable] = []
_CACHE_LOCK = threading.Lock()


def load_table(path: str | os.PathLike[str] | None = None) -> PriceTable:
    """The bundled table, merged with ``path`` (default: ``$O11YLAB_PRICING_FILE``).

    Re-read when the override file changes, so a notebook picks up edited prices.
    Raises ``PricingError`` naming the file and the problem when it cannot be used.
    """
    with _CACHE_LOCK:
        if not _BUNDLED:
            _BUNDLED.append(_bundled())
        bundled = _BUNDLED[0]
        raw = os.environ.get(PRICING_FILE_ENV, "").strip() if path is None else os.fspath(path)
        if not raw:
            return bundled
        override = Path(raw).expanduser()
        try:
            mtime = override.stat().st_mtime
        except OSError:
            mtime = -1.0  # let _read report the problem
        key = (str(override), mtime)
        table = _CACHE.get(key)
        if table is None:
            table = _merge(bundled, override)
            _CACHE.clear()
            _CACHE[key] = table
        return table


# --- arithmetic ----------------------------------------------------------------------------------


def cost_of(
    model: str | None,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cached_input_tokens: int = 0,
    *,
    table: PriceTable | None = None,
) -> Cost | None:
    """The cost of one call, or None when the model has no price.

    ``input_tokens`` counts all prompt tokens, cached ones included (as OpenAI reports
    them); the cached part is charged at the cached-input price when the model has one.
    """
    table = table or load_table()
    found = table.lookup(model)
    if found is None:
        return None
    name, price = found
    return _priced(name, price, table.version, input_tokens, output_tokens, cached_input_tokens)


def _priced(name: str, price: Price, version: str, input_tokens: int, output_tokens: int,
            cached_input_tokens: int) -> Cost | None:
    if min(input_tokens, output_tokens, cached_input_tokens) < 0:
        raise ValueError("token counts cannot be negative")
    if output_tokens and price.output is None:
        return None  # an embedding price cannot cost generated tokens
    cached = min(cached_input_tokens, input_tokens)
    cached_rate = price.input if price.cached_input is None else price.cached_input
    input_amount = (input_tokens - cached) * price.input / _PER
    cached_amount = cached * cached_rate / _PER
    output_amount = output_tokens * (price.output or 0.0) / _PER
    return Cost(
        amount=input_amount + cached_amount + output_amount,
        input_amount=input_amount,
        cached_input_amount=cached_amount,
        output_amount=output_amount,
        priced_as=name,
        version=version,
    )


# --- local servers: whatever o11ylab serves costs nothing ----------------------------------------

_LOCAL_SERVERS: set[tuple[str, int]] = set()
_LOCAL_PRICE = Price(input=0.0, output=0.0, local=True)


def register_local_server(host: str, port: int) -> None:
    """Calls to this address are priced as local models (0 USD) whatever the model name."""
    _LOCAL_SERVERS.add((host, int(port)))
    if host in ("127.0.0.1", "localhost"):
        _LOCAL_SERVERS.add(("localhost" if host == "127.0.0.1" else "127.0.0.1", int(port)))


def _is_local_server(host: Any, port: Any) -> bool:
    if host is None or port is None:
        return False
    try:
        return (str(host), int(port)) in _LOCAL_SERVERS
    except (TypeError, ValueError):
        return False


def price_call(
    request_model: str | None,
    response_model: str | None,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cached_input_tokens: int = 0,
    *,
    server: tuple[Any, Any] | None = None,
    provider: str | None = None,
    table: PriceTable | None = None,
) -> Cost | None:
    """The cost of one call as o11ylab reports it on spans.

    The price of the response model (often a dated snapshot), else of the request model; but
    models o11ylab runs itself (in the kernel, or behind its local endpoint) cost 0 whatever
    they are called, unless the user's pricing file prices that model (to charge local GPU
    time, say)."""
    table = table or load_table()
    tokens = (input_tokens, output_tokens, cached_input_tokens)
    found = None
    for model in (response_model, request_model):
        found = table.lookup(model)
        if found is not None:
            break
    if found is not None and found[0] in table.overridden:
        return _priced(found[0], found[1], table.version, *tokens)  # the user priced it
    if provider == semconv.PROVIDER_LOCAL or (server is not None and _is_local_server(*server)):
        return _priced("local", _LOCAL_PRICE, table.version, *tokens)
    if found is not None:
        return _priced(found[0], found[1], table.version, *tokens)
    return None


# --- the span hook and the metric ----------------------------------------------------------------


def _int(value: Any) -> int:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return int(value)
    return 0


class _CostHook:
    """Costs GenAI operation spans as they end (an enricher: ``o11ylab.enrichment``)."""

    name = "cost"

    def __init__(self, meter: Any) -> None:
        self.counter = meter.create_counter(
            semconv.METRIC_GEN_AI_COST, unit="USD",
            description="Cost of GenAI client operations in USD, by model (o11ylab extension).",
        )
        self._warned = False

    def on_end(self, span: Any) -> dict[str, Any] | None:
        attributes = span.attributes or {}
        operation = attributes.get(semconv.GEN_AI_OPERATION_NAME)
        if operation not in semconv.ROLLUP_OPERATIONS:
            return None
        if semconv.GEN_AI_USAGE_COST in attributes or semconv.COST_UNKNOWN in attributes:
            return None  # priced by whoever made the span
        if span.kind is SpanKind.SERVER:
            return None  # the server's view of a call the client span already pays for
        input_tokens = attributes.get(semconv.GEN_AI_USAGE_INPUT_TOKENS)
        output_tokens = attributes.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS)
        if input_tokens is None and output_tokens is None:
            return None  # nothing was used (a failed call): nothing to cost
        tokens = (_int(input_tokens), _int(output_tokens),
                  _int(attributes.get(semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS)))
        try:
            table = load_table()
        except PricingError as exc:
            if not self._warned:
                self._warned = True
                print(f"o11ylab: costs are unknown until the price table is fixed: {exc}",
                      file=sys.stderr)
            return {semconv.COST_UNKNOWN: True}
        cost = price_call(
            attributes.get(semconv.GEN_AI_REQUEST_MODEL),
            attributes.get(semconv.GEN_AI_RESPONSE_MODEL),
            *tokens,
            server=(attributes.get(semconv.SERVER_ADDRESS), attributes.get(semconv.SERVER_PORT)),
            provider=attributes.get(semconv.GEN_AI_PROVIDER_NAME),
            table=table,
        )
        if cost is None:
            return {semconv.COST_UNKNOWN: True, semconv.PRICING_VERSION: table.version}
        metric_attributes = {semconv.GEN_AI_OPERATION_NAME: operation}
        for key in (semconv.GEN_AI_PROVIDER_NAME, semconv.GEN_AI_REQUEST_MODEL,
                    semconv.GEN_AI_RESPONSE_MODEL):
            value = attributes.get(key)
            if value is not None:
                metric_attributes[key] = value
        self.counter.add(cost.amount, metric_attributes)
        return cost.attributes()


_INSTALLED: dict[int, _CostHook] = {}
_INSTALL_LOCK = threading.Lock()


def install(telemetry: Any = None) -> None:
    """Put cost on every GenAI operation span of this process (idempotent)."""
    from .telemetry import get_telemetry

    telemetry = telemetry or get_telemetry()
    with _INSTALL_LOCK:
        hook = _INSTALLED.get(id(telemetry))
        if hook is None:
            hook = _INSTALLED[id(telemetry)] = _CostHook(telemetry.meter)
        telemetry.enrichers.register(hook)
