"""What a GenAI call cost, from the maintained ``genai-prices`` data, offline and dated.

Prices come from the `genai-prices <https://github.com/pydantic/genai-prices>`_ package, which
bundles dated prices for many providers and needs no network. A span is priced by its provider
(``gen_ai.provider.name``, or the ``server.address`` it called) and its response model, else its
request model, at the time the request started: a price that changed on a date is charged at
the rate of that date. Cached-input tokens (``gen_ai.usage.cache_read.input_tokens``), cache
writes and reasoning tokens are priced at their own rates where the model has them.

``O11YLAB_PRICING_FILE`` names a JSON file of USD per 1M tokens whose entries win over
genai-prices: for a model it lacks, or a negotiated price (a partial file is fine)::

    {"version": "team-2025-09", "models": {"gpt-4o-mini": {"input": 0.1, "output": 0.4}}}

Models that o11ylab runs itself (provider ``o11ylab.local``, or a server registered with
``register_local_server``) cost 0 USD, with ``gen_ai.usage.cost.source=local``. A model no
source knows is costed as unknown: no amount, ``o11ylab.cost.unknown=true``. Never 0, which
would read as free.

Cost reaches telemetry through ``install()``: an enricher puts the amount (and its parts) on
every GenAI operation span (openai, anthropic, langchain, ...) before exporters and cell
roll-ups see it, and adds it to the ``o11ylab.gen_ai.client.cost`` counter by model. A GenAI
span whose descendant GenAI span already carries usage (langchain's ``chat`` over the openai
SDK's) is the same call seen twice: it is marked ``o11ylab.usage.counted_below`` instead.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

from opentelemetry.trace import SpanKind

from . import semconv
from ._compat import raw_attributes
from ._say import say
from .config import ConfigError, pricing_file

__all__ = [
    "Cost",
    "Price",
    "PriceTable",
    "PricingError",
    "cost_of",
    "data_version",
    "install",
    "load_table",
    "price_call",
    "register_local_server",
    "uninstall",
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
    """USD per 1M tokens for one model of the override file."""

    input: float
    output: float | None = None
    cached_input: float | None = None
    kind: str = "chat"
    local: bool = False


@dataclass(frozen=True)
class PriceTable:
    """The override file's prices (``models``; empty without a file) over genai-prices' data.

    ``version`` and ``date`` describe the genai-prices data, then the file's version after a
    ``+``; ``files`` names the override file.
    """

    version: str
    date: str
    source: str
    currency: str
    models: dict[str, Price]
    files: tuple[str, ...] = ()
    overridden: frozenset[str] = frozenset()  # entries the user's file set: they always win
    file_version: str | None = None

    def lookup(self, model: str | None) -> tuple[str, Price] | None:
        """The override entry for ``model``: exact, then case-insensitive, then without a date
        suffix (``gpt-4o-mini-2024-07-18``) or a folder/organisation prefix (``org/Model``)."""
        if not model or not self.models:
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
    """A call's cost in USD, with its parts, the price used and where that price came from."""

    amount: float
    input_amount: float  # input that was not a cache read (cache writes included)
    cached_input_amount: float
    output_amount: float  # reasoning tokens included
    priced_as: str  # "openai:gpt-4o" (genai-prices provider:model), an override entry, "local"
    version: str
    currency: str = "USD"
    source: str = semconv.COST_SOURCE_GENAI_PRICES
    cache_creation_amount: float = 0.0  # the part of input_amount that paid for cache writes
    file: str | None = None

    def attributes(self) -> dict[str, Any]:
        return _cost_attributes(
            _Amounts(
                self.amount,
                self.input_amount,
                self.cached_input_amount,
                self.output_amount,
                self.cache_creation_amount,
            ),
            self.priced_as,
            self.version,
            self.source,
            self.file,
            self.currency,
        )


class _Amounts(NamedTuple):
    """A cost's USD amounts (``Cost``'s fields of the same meaning)."""

    total: float
    input: float
    cached_input: float
    output: float
    cache_creation: float


def _cost_attributes(
    amounts: _Amounts,
    priced_as: str,
    version: str,
    source: str,
    file: str | None,
    currency: str = "USD",
) -> dict[str, Any]:
    """The span attributes of a cost (``Cost.attributes``; the enricher builds no ``Cost``)."""
    attributes: dict[str, Any] = {
        semconv.GEN_AI_USAGE_COST: amounts.total,
        semconv.GEN_AI_USAGE_COST_CURRENCY: currency,
        semconv.GEN_AI_USAGE_COST_SOURCE: source,
        semconv.COST_INPUT: amounts.input,
        semconv.COST_CACHED_INPUT: amounts.cached_input,
        semconv.COST_OUTPUT: amounts.output,
        semconv.COST_PRICED_AS: priced_as,
        semconv.PRICING_VERSION: version,
    }
    if amounts.cache_creation:
        attributes[semconv.COST_CACHE_CREATION] = amounts.cache_creation
    if file is not None:
        attributes[semconv.PRICING_FILE] = file
    return attributes


# --- the override file ---------------------------------------------------------------------------


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _number(value: Any, where: str, origin: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
        raise PricingError(
            f"{origin}: {where} must be a number of USD per 1M tokens, not {json.dumps(value)}."
        )
    if value < 0:
        raise PricingError(f"{origin}: {where} is negative ({value}); prices are >= 0.")
    return float(value)


def _price(name: str, entry: Any, origin: str) -> Price:
    where = f'models["{name}"]'
    if not isinstance(entry, dict):
        raise PricingError(
            f'{origin}: {where} must be an object like {{"input": 0.15, "output": 0.6}}.'
        )
    unknown = sorted(set(entry) - _PRICE_KEYS)
    if unknown:
        raise PricingError(
            f"{origin}: {where} has unknown key(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(_PRICE_KEYS))}."
        )
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
        raise PricingError(
            f"{origin}: not UTF-8 text (byte {exc.start}); save it as UTF-8 JSON."
        ) from None
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


def _override(base: _Data, path: Path) -> PriceTable:
    origin = f"pricing file {path} ({PRICING_FILE_ENV})"
    data = _read(path, origin)
    models = {name: _price(name, entry, origin) for name, entry in data["models"].items()}
    user_version = data.get("version") or "user"
    return PriceTable(
        version=f"{base.version}+{user_version}",
        date=data.get("date", base.date),
        source=data.get("source", str(path)),
        currency="USD",
        models=models,
        files=(str(path),),
        overridden=frozenset(models),
        file_version=user_version,
    )


_CACHE: dict[tuple[str, float], PriceTable] = {}
_CACHE_LOCK = threading.Lock()


def load_table(path: str | os.PathLike[str] | None = None) -> PriceTable:
    """The override prices of ``path`` (default: ``$O11YLAB_PRICING_FILE``) over genai-prices.

    Without a file the table has no ``models`` of its own and describes the genai-prices data.
    Re-read when the override file changes, so a notebook picks up edited prices.
    Raises ``PricingError`` naming the file and the problem when it cannot be used.
    """
    base = _data()
    raw = (pricing_file() or "") if path is None else os.fspath(path)
    if not raw:
        return base.table
    override = Path(raw).expanduser()
    try:
        mtime = override.stat().st_mtime
    except OSError:
        mtime = -1.0  # let _read report the problem
    key = (str(override), mtime)
    table = _CACHE.get(key)
    if table is None:
        with _CACHE_LOCK:
            table = _override(base, override)
            _CACHE.clear()
            _CACHE[key] = table
    return table


# --- genai-prices --------------------------------------------------------------------------------

# OpenTelemetry's gen_ai.provider.name values where genai-prices calls the provider otherwise.
# Others (deepseek, groq, cohere, perplexity, ...) are the same in both, or matched by genai-prices.
PROVIDER_IDS = {
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "aws.bedrock": "aws",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "mistral_ai": "mistral",
    "x_ai": "x-ai",
}


@dataclass(frozen=True)
class _Data:
    """What o11ylab says about the genai-prices data in use."""

    snapshot: Any
    version: str  # "genai-prices 0.2.3, data 2026-12-01"
    date: str
    table: PriceTable


_DATA: list[_Data] = []


_GET_SNAPSHOT: list[Any] = []  # genai_prices.data_snapshot.get_snapshot, once imported


def _snapshot() -> Any:
    # Asked at every costed span: the import statement's own lookups cost a few µs there.
    if not _GET_SNAPSHOT:
        try:
            from genai_prices import data_snapshot  # lazy: the data is 1.6 MB of Python
        except ImportError:
            raise PricingError(
                "genai-prices is not installed, so calls cannot be costed: "
                "pip install 'o11ylab[ai]' (or genai-prices)."
            ) from None
        _GET_SNAPSHOT[:] = [data_snapshot.get_snapshot]
    return _GET_SNAPSHOT[0]()


def _data() -> _Data:
    snapshot = _snapshot()
    if _DATA and _DATA[0].snapshot is snapshot:
        return _DATA[0]
    from genai_prices import __version__
    from genai_prices.types import ConditionalPrice, StartDateConstraint

    if snapshot.from_auto_update:  # someone ran genai_prices.UpdatePrices in this process
        date = snapshot.timestamp.date().isoformat()
    else:  # the bundled data: dated by the latest price change it records
        dates = [
            price.constraint.start_date
            for provider in snapshot.providers
            for model in provider.models
            if isinstance(model.prices, list)
            for price in model.prices
            if isinstance(price, ConditionalPrice)
            and isinstance(price.constraint, StartDateConstraint)
        ]
        date = max(dates).isoformat() if dates else "undated"
    version = f"genai-prices {__version__}, data {date}"
    table = PriceTable(
        version=f"genai-prices {__version__}",
        date=date,
        source="https://github.com/pydantic/genai-prices",
        currency="USD",
        models={},
    )
    data = _Data(snapshot, version, date, table)
    _DATA[:] = [data]
    _LOOKUPS.clear()
    return data


def data_version() -> str:
    """The prices in use, for ``%o11y status`` and run summaries:
    ``"genai-prices 0.2.3, data 2026-12-01"``, then the override file if one is set.

    The data date is the latest price change the bundled data records (genai-prices states no
    release date; announced changes can lie ahead of today). Raises ``PricingError`` when the
    override file cannot be used.
    """
    table = load_table()
    text = _data().version
    if table.files:
        text += f"; override {table.file_version} ({table.files[0]})"
    return text


@dataclass(frozen=True)
class _Found:
    provider: Any  # genai_prices.types.Provider
    model: Any  # genai_prices.types.ModelInfo

    @property
    def name(self) -> str:
        return f"{self.provider.id}:{self.model.id}"


# First-party providers whose catalogues are searched last, for a model named with no provider.
_MAKERS = ("openai", "anthropic", "google", "mistral", "x-ai", "deepseek", "cohere")
_LOOKUPS: dict[tuple[Any, ...], _Found | None] = {}
_LOOKUPS_MAX = 4096


def _model_refs(models: tuple[str | None, ...]) -> list[str]:
    refs: list[str] = []
    for model in models:
        if not model or not isinstance(model, str):
            continue
        for ref in (model, model.rstrip("/").rsplit("/", 1)[-1]):
            if ref and ref not in refs:
                refs.append(ref)
    return refs


def _find(
    provider: str | None, address: str | None, models: tuple[str | None, ...]
) -> _Found | None:
    """The genai-prices entry for a call: cached by (provider, address, models), misses too.

    Who served the call is tried first (``server.address`` against genai-prices' API URLs, so
    an OpenAI SDK pointed at Groq is priced as Groq), then the provider's name, then the model
    name alone (genai-prices matches ``gpt-``, ``claude``, ``gemini``... to their makers), then
    the models of the big makers by name (``text-embedding-3-small`` matches no maker's pattern).
    """
    key = (provider, address, *models)
    try:
        return _LOOKUPS[key]
    except KeyError:
        pass
    snapshot = _data().snapshot
    ways: list[tuple[str | None, str | None]] = []
    if address and isinstance(address, str):
        ways.append((None, f"https://{address}"))
    if provider and isinstance(provider, str):
        ways.append((PROVIDER_IDS.get(provider.lower(), provider), None))
    ways.append((None, None))
    ways.extend((maker, None) for maker in _MAKERS)
    found = None
    for ref in _model_refs(models):
        for provider_id, api_url in ways:
            try:
                matched = snapshot.find_provider_model(ref, None, provider_id, api_url)
            except LookupError:
                continue
            found = _Found(*matched)
            break
        if found is not None:
            break
    if len(_LOOKUPS) >= _LOOKUPS_MAX:
        _LOOKUPS.clear()
    _LOOKUPS[key] = found
    return found


@dataclass(frozen=True, slots=True)
class _Linear:
    """A price without tiers, as USD per token of each kind and per request: what
    genai-prices charges, measured once through its own arithmetic, then a few multiplications
    a call instead of its general (~65 µs) decomposition. Floats: the amounts on spans are
    floats, and float products cost a tenth of Decimal's."""

    request: float
    input: float
    cache_read: float
    cache_write: float
    output: float
    reasoning: float


_LINEAR: dict[tuple[int, tuple[int, ...]], tuple[Any, _Linear | None]] = {}
_MILLION = 1_000_000


def _tier_choice(model_price: Any, input_tokens: int) -> tuple[int, ...]:
    """Which tier of each tiered price a prompt of ``input_tokens`` reaches (0: the base), by
    genai-prices' rule: the highest tier whose start the whole prompt exceeds."""
    from genai_prices.types import TieredPrices

    choice = []
    for value in vars(model_price).values():
        if isinstance(value, TieredPrices):
            reached = 0
            for index in range(len(value.tiers), 0, -1):
                if input_tokens > value.tiers[index - 1].start:
                    reached = index
                    break
            choice.append(reached)
    return tuple(choice)


def _linear(model_price: Any, input_tokens: int = 0) -> _Linear | None:
    """The price per token of each kind for a prompt of this size (tiers resolved), measured
    once per price and tier through genai-prices' own arithmetic."""
    choice = _tier_choice(model_price, input_tokens)
    key = (id(model_price), choice)
    entry = _LINEAR.get(key)
    if entry is not None and entry[0] is model_price:
        return entry[1]
    from genai_prices import Usage
    from genai_prices.types import ModelPrice, TieredPrices

    flat: dict[str, Any] = {}
    chosen = iter(choice)
    for price_key, value in vars(model_price).items():
        if isinstance(value, TieredPrices):
            index = next(chosen)
            value = value.base if index == 0 else value.tiers[index - 1].price
        flat[price_key] = value
    single = ModelPrice(**flat)

    def total(**tokens: int) -> Decimal:
        result: Decimal = single.calc_price(Usage(**tokens))["total_price"]
        return result

    try:
        base = total(input_tokens=0, output_tokens=0)

        def per_token(**tokens: int) -> float:
            return float((total(**tokens) - base) / _MILLION)

        linear: _Linear | None = _Linear(
            request=float(base),
            input=per_token(input_tokens=_MILLION),
            cache_read=per_token(input_tokens=_MILLION, cache_read_tokens=_MILLION),
            cache_write=per_token(input_tokens=_MILLION, cache_write_tokens=_MILLION),
            output=per_token(output_tokens=_MILLION),
            reasoning=per_token(output_tokens=_MILLION, output_reasoning_tokens=_MILLION),
        )
    except (ValueError, ArithmeticError):
        linear = None  # genai-prices' own arithmetic will say what it can
    _LINEAR[key] = (model_price, linear)
    return linear


class _Tokens(NamedTuple):  # built on every costed span: a tuple is cheaper than a dataclass
    input: int  # all input: cache reads and writes included
    output: int  # all output: reasoning included
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0


def _tokens(
    input_tokens: int,
    output_tokens: int,
    cache_read: int = 0,
    cache_write: int = 0,
    reasoning: int = 0,
) -> _Tokens:
    if min(input_tokens, output_tokens, cache_read, cache_write, reasoning) < 0:
        raise ValueError("token counts cannot be negative")
    if cache_read + cache_write > input_tokens:
        # The semantic conventions count cached tokens in input_tokens; a count below them is
        # the provider's own split (Anthropic reports input without cache reads and writes).
        input_tokens += cache_read + cache_write
    if reasoning > output_tokens:
        output_tokens += reasoning  # reported beside the output, as Gemini's thoughts are
    return _Tokens(input_tokens, output_tokens, cache_read, cache_write, reasoning)


def _linear_amounts(linear: _Linear, tokens: _Tokens) -> _Amounts:
    uncached = tokens.input - tokens.cache_read - tokens.cache_write
    cache_write = tokens.cache_write * linear.cache_write
    input_amount = uncached * linear.input + cache_write
    cached = tokens.cache_read * linear.cache_read
    output_amount = (
        tokens.output - tokens.reasoning
    ) * linear.output + tokens.reasoning * linear.reasoning
    total = linear.request + input_amount + cached + output_amount
    # tuple.__new__: the NamedTuple's own __new__ is a Python frame (~1 us in place, issue 13).
    return tuple.__new__(_Amounts, (total, input_amount, cached, output_amount, cache_write))


def _unsplit_amounts(rate: _Rate, tokens: _Tokens) -> _Amounts:
    """A price o11ylab cannot split: genai-prices' total, split by direction."""
    from genai_prices import Usage

    assert rate.found is not None
    calculation = rate.found.model.calc_price(
        Usage(
            input_tokens=tokens.input,
            output_tokens=tokens.output,
            cache_read_tokens=tokens.cache_read,
            cache_write_tokens=tokens.cache_write,
            output_reasoning_tokens=tokens.reasoning,
        ),
        rate.found.provider,
        genai_request_timestamp=_minute_start(rate.minute),
    )
    total = float(calculation.total_price)
    return _Amounts(
        total, float(calculation.input_price), 0.0, float(calculation.output_price), 0.0
    )


# --- arithmetic ----------------------------------------------------------------------------------


def _priced(price: Price, tokens: _Tokens) -> _Amounts | None:
    """The amounts at a price of the override file (or the local 0): cache writes cost input,
    reasoning output."""
    if tokens.output and price.output is None:
        return None  # an embedding price cannot cost generated tokens
    cached = min(tokens.cache_read, tokens.input)
    cached_rate = price.input if price.cached_input is None else price.cached_input
    input_amount = (tokens.input - cached) * price.input / _PER
    cached_amount = cached * cached_rate / _PER
    output_amount = tokens.output * (price.output or 0.0) / _PER
    return _Amounts(
        input_amount + cached_amount + output_amount,
        input_amount,
        cached_amount,
        output_amount,
        min(tokens.cache_write, tokens.input) * price.input / _PER,
    )


def cost_of(
    model: str | None,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cached_input_tokens: int = 0,
    *,
    table: PriceTable | None = None,
) -> Cost | None:
    """The cost of one call to ``model`` (any provider), or None when no source prices it.

    ``input_tokens`` counts all prompt tokens, cached ones included (as OpenAI reports
    them); the cached part is charged at the cached-input price when the model has one.
    """
    return price_call(model, None, input_tokens, output_tokens, cached_input_tokens, table=table)


# --- local servers: whatever o11ylab serves costs nothing ----------------------------------------

_LOCAL_SERVERS: set[tuple[str, int]] = set()
_LOCAL_PRICE = Price(input=0.0, output=0.0, local=True)


def register_local_server(host: str, port: int) -> None:
    """Calls to this address are priced as local models (0 USD) whatever the model name."""
    _LOCAL_SERVERS.add((host, int(port)))
    if host in ("127.0.0.1", "localhost"):
        _LOCAL_SERVERS.add(("localhost" if host == "127.0.0.1" else "127.0.0.1", int(port)))
    _RATES.clear()  # a call to it resolved before was priced as whatever the model is elsewhere


def _is_local_server(host: Any, port: Any) -> bool:
    if host is None or port is None or not _LOCAL_SERVERS:
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
    cache_creation_tokens: int = 0,
    reasoning_tokens: int = 0,
    when: datetime | None = None,
) -> Cost | None:
    """The cost of one call as o11ylab reports it on spans, or None when no source prices it.

    In order: the user's override file (response model, else request model); models o11ylab
    runs itself (in the kernel, or behind a registered local server) at 0 whatever they are
    called; genai-prices at ``when`` (default: now; a naive time is UTC) for this provider,
    server and model. ``input_tokens`` includes cached tokens and ``output_tokens`` reasoning
    tokens, as the semantic conventions count them."""
    tokens = _tokens(
        input_tokens, output_tokens, cached_input_tokens, cache_creation_tokens, reasoning_tokens
    )
    call = (request_model, response_model, server, provider)
    rate = _rate(table or load_table(), call, _minute(when))
    return rate.cost(tokens) if rate is not None else None


# --- how a call is priced, resolved once a minute ----------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rate:
    """How calls to one model, provider and server are priced during one minute.

    Resolving it (the override file, local servers, genai-prices' provider and model match,
    the price in force, its per-token rates) is most of a cost's work. The cost enricher runs on
    every GenAI span, right after the SDK's own work has pushed its data out of the CPU caches,
    where resolving cost ~60 µs a chat call (issue 13); a rate found once a minute leaves a few
    multiplications. Prices change on dates and at times of day given in hours and minutes, so
    the price in force at a minute's start is the price of every request in it.
    """

    minute: int
    name: str  # priced_as
    version: str
    source: str
    price: Price | None = None  # an override file's or the local (0) price
    file: str | None = None
    found: _Found | None = None  # genai-prices' entry, and its price in force that minute
    model_price: Any = None
    linear: _Linear | None = None  # the price's rates when it has no tiers

    def amounts(self, tokens: _Tokens) -> _Amounts | None:
        if self.price is not None:
            return _priced(self.price, tokens)
        linear = self.linear if self.linear is not None else _linear(self.model_price, tokens.input)
        if linear is None:
            return _unsplit_amounts(self, tokens)
        return _linear_amounts(linear, tokens)

    def cost(self, tokens: _Tokens) -> Cost | None:
        amounts = self.amounts(tokens)
        if amounts is None:
            return None
        return Cost(
            amount=amounts.total,
            input_amount=amounts.input,
            cached_input_amount=amounts.cached_input,
            output_amount=amounts.output,
            priced_as=self.name,
            version=self.version,
            source=self.source,
            cache_creation_amount=amounts.cache_creation,
            file=self.file,
        )

    def attributes(self, tokens: _Tokens) -> dict[str, Any] | None:
        """``self.cost(tokens).attributes()``, without building the ``Cost``."""
        amounts = self.amounts(tokens)
        if amounts is None:
            return None
        return _cost_attributes(amounts, self.name, self.version, self.source, self.file)


# call -> (the table and minute it was resolved for, its rate: None when nothing prices it)
_RATES: dict[tuple[Any, ...], tuple[PriceTable, int, _Rate | None]] = {}
_RATES_MAX = 1024


# What prices a call: (request model, response model, (server address, port) or None, provider).
_Call = tuple[Any, Any, "tuple[Any, Any] | None", Any]


def _minute(when: datetime | None) -> int:
    if when is None:
        return int(time.time()) // 60
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp()) // 60


def _minute_start(minute: int) -> datetime:
    return datetime.fromtimestamp(minute * 60, tz=UTC)


def _rate(table: PriceTable, key: _Call, minute: int) -> _Rate | None:
    """The cached resolution of a call's price (see ``_Rate``), None when nothing prices it."""
    try:
        kept = _RATES.get(key)
    except TypeError:  # a model attribute that is not a string: resolved, not cached
        return _resolve(table, key, minute)
    if kept is not None and kept[0] is table and kept[1] == minute:
        return kept[2]
    rate = _resolve(table, key, minute)
    if len(_RATES) >= _RATES_MAX:
        _RATES.clear()
    _RATES[key] = (table, minute, rate)
    return rate


def _resolve(table: PriceTable, key: _Call, minute: int) -> _Rate | None:
    request_model, response_model, server, provider = key
    for model in (response_model, request_model):
        found = table.lookup(model)
        if found is not None:  # the user priced it
            return _Rate(
                minute,
                found[0],
                table.file_version or table.version,
                semconv.COST_SOURCE_OVERRIDE,
                price=found[1],
                file=table.files[0] if table.files else None,
            )
    if provider == semconv.PROVIDER_LOCAL or (server is not None and _is_local_server(*server)):
        local = semconv.COST_SOURCE_LOCAL
        return _Rate(minute, "local", local, local, price=_LOCAL_PRICE)
    address = server[0] if server is not None else None
    entry = _find(provider, address, (response_model, request_model))
    if entry is None:
        return None
    model_price = entry.model.get_prices(_minute_start(minute))
    linear = _linear(model_price) if not _tier_choice(model_price, 0) else None
    return _Rate(
        minute,
        entry.name,
        _data().version,
        semconv.COST_SOURCE_GENAI_PRICES,
        found=entry,
        model_price=model_price,
        linear=linear,
    )


# --- the enricher and the metric -----------------------------------------------------------------


def _int(value: Any) -> int:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return int(value)
    return 0


_USAGE_BELOW_MAX = 10_000


# The cost metric's attributes, in the order of SummedCounter's series tuples.
_COST_METRIC_KEYS = (
    semconv.GEN_AI_OPERATION_NAME,
    semconv.GEN_AI_PROVIDER_NAME,
    semconv.GEN_AI_REQUEST_MODEL,
    semconv.GEN_AI_RESPONSE_MODEL,
)
_ENVIRON = os.environ
# os.environ's own dict of encoded names: the enricher asks it whether O11YLAB_PRICING_FILE is
# set with one C lookup (os.environ.get raises and catches a KeyError when it is not).
_ENVIRON_DATA: dict[Any, Any] | None = getattr(os.environ, "_data", None)
if type(_ENVIRON_DATA) is not dict:
    _ENVIRON_DATA = None
_PRICING_FILE_KEY = os.environ.encodekey(PRICING_FILE_ENV)


class _CostHook:
    """Costs GenAI operation spans as they end (an enricher: ``o11ylab.enrichment``)."""

    name = "cost"

    def __init__(self, meter: Any) -> None:
        from .telemetry._deferred import SummedCounter

        self.counter = SummedCounter(
            meter,
            semconv.METRIC_GEN_AI_COST,
            keys=_COST_METRIC_KEYS,
            unit="USD",
            description="Cost of GenAI client operations in USD, by model (o11ylab extension).",
        )
        # Span ids of open spans with a descendant GenAI span that carried usage. Children end
        # before their parents, so the mark is there when the parent ends, and leaves with it.
        self._usage_below: dict[int, bool] = {}

    def _usage_seen_below(self, span: Any, carries_usage: bool) -> bool:
        context = span.context
        below = (
            bool(self._usage_below)
            and context is not None
            and self._usage_below.pop(context.span_id, False)
        )
        parent = span.parent
        if (below or carries_usage) and parent is not None and span.kind is not SpanKind.SERVER:
            if len(self._usage_below) >= _USAGE_BELOW_MAX:  # parents that never ended
                self._usage_below.clear()
            self._usage_below[parent.span_id] = True
        return below

    def on_end(self, span: Any, _state: None = None) -> dict[str, Any] | None:
        attributes = raw_attributes(span)
        operation = attributes.get(semconv.GEN_AI_OPERATION_NAME)
        is_operation = operation in semconv.ROLLUP_OPERATIONS
        input_tokens = attributes.get(semconv.GEN_AI_USAGE_INPUT_TOKENS) if is_operation else None
        output_tokens = attributes.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS) if is_operation else None
        carries_usage = input_tokens is not None or output_tokens is not None
        below = self._usage_seen_below(span, carries_usage)
        if not is_operation:
            return None
        if span.kind is SpanKind.SERVER:
            return None  # the server's view of a call the client span already pays for
        if below:  # the same call, costed on the span below (langchain's chat over openai's)
            return {semconv.USAGE_COUNTED_BELOW: True} if carries_usage else None
        if semconv.GEN_AI_USAGE_COST in attributes or semconv.COST_UNKNOWN in attributes:
            return None  # priced by whoever made the span
        if not carries_usage:
            return None  # nothing was used (a failed call): nothing to cost
        # The common case on the fewest Python calls (each ~1 us here, right after the SDK's
        # own work: issue 13): no override file, the genai-prices data already read, plain
        # token counts, a rate resolved this minute. Anything else goes the general way.
        data = _DATA[0] if _DATA and os.environ is _ENVIRON else None
        if (
            data is not None
            and _ENVIRON_DATA is not None
            and not _ENVIRON_DATA.get(_PRICING_FILE_KEY)
            and _GET_SNAPSHOT[0]() is data.snapshot
        ):
            table = data.table
        else:
            try:
                table = load_table()
            except PricingError as exc:
                say(
                    f"costs are unknown until the price table is fixed: {exc}",
                    once=(id(self), "table"),
                )
                return {semconv.COST_UNKNOWN: True}
        start = span.start_time
        minute = start // 60_000_000_000 if type(start) is int else _minute(None)
        cache_read = attributes.get(semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS)
        cache_write = attributes.get(
            semconv.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
        ) or attributes.get(semconv.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS)
        reasoning = attributes.get(semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS)
        call = (
            attributes.get(semconv.GEN_AI_REQUEST_MODEL),
            attributes.get(semconv.GEN_AI_RESPONSE_MODEL),
            (attributes.get(semconv.SERVER_ADDRESS), attributes.get(semconv.SERVER_PORT)),
            attributes.get(semconv.GEN_AI_PROVIDER_NAME),
        )
        try:
            if cache_read or cache_write or reasoning:  # most spans have none of these three
                tokens = _tokens(
                    _int(input_tokens),
                    _int(output_tokens),
                    _int(cache_read),
                    _int(cache_write),
                    _int(reasoning),
                )
            else:  # what _tokens gives for two counts: nothing to check or move
                tokens = tuple.__new__(
                    _Tokens,
                    (
                        input_tokens
                        if type(input_tokens) is int and input_tokens > 0
                        else _int(input_tokens),
                        output_tokens
                        if type(output_tokens) is int and output_tokens > 0
                        else _int(output_tokens),
                        0,
                        0,
                        0,
                    ),
                )
            try:
                kept = _RATES.get(call)
            except TypeError:  # a model attribute that is not a string: _rate resolves it
                kept = None
            if kept is not None and kept[0] is table and kept[1] == minute:
                rate = kept[2]
            else:
                rate = _rate(table, call, minute)
            added = rate.attributes(tokens) if rate is not None else None
        except ValueError:  # usage genai-prices refuses as inconsistent
            added = None
        if added is None:
            return {semconv.COST_UNKNOWN: True, semconv.PRICING_VERSION: table.version}
        try:
            self.counter.add(
                added[semconv.GEN_AI_USAGE_COST],
                (
                    operation,
                    attributes.get(semconv.GEN_AI_PROVIDER_NAME),
                    attributes.get(semconv.GEN_AI_REQUEST_MODEL),
                    attributes.get(semconv.GEN_AI_RESPONSE_MODEL),
                ),
            )
        except TypeError:  # an attribute value that is not hashable: on the span, not the metric
            pass
        return added


_INSTALL_LOCK = threading.Lock()


def install(telemetry: Any = None) -> None:
    """Put cost on every GenAI operation span of this process (idempotent).

    ``telemetry`` is anything with a ``meter`` and an ``enrichers`` registry (default: o11ylab's,
    when ``%load_ext`` or ``o11ylab.init()`` started it; otherwise this does nothing, since a
    library installs no providers of its own).
    """
    from .telemetry import peek_telemetry

    telemetry = telemetry or peek_telemetry()
    if telemetry is None:
        return
    with _INSTALL_LOCK:
        # Kept on the telemetry across uninstall: its counter is created once. (Keyed by id()
        # instead, a short-lived telemetry's recycled id handed its hook to the next one.)
        hook = getattr(telemetry, "_o11ylab_cost_hook", None)
        if hook is None:
            hook = _CostHook(telemetry.meter)
            telemetry._o11ylab_cost_hook = hook
        telemetry.enrichers.register(hook)


def uninstall(telemetry: Any = None) -> None:
    """Stop costing spans (idempotent); ``install`` puts the same enricher back."""
    from .telemetry import peek_telemetry

    telemetry = telemetry or peek_telemetry()
    if telemetry is None:
        return
    with _INSTALL_LOCK:
        telemetry.enrichers.unregister(_CostHook.name)
