"""Cost from genai-prices, the override file, local models and unknown ones, on spans.

Expected amounts are computed here through genai-prices' own API, never copied: the data
changes with each release of the package, the arithmetic o11ylab does with it must not.
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from genai_prices import __version__ as genai_prices_version

from o11ylab import pricing, semconv
from o11ylab.pricing import PricingError, cost_of, load_table

from .ai_support import LocalServer, local_fixture, local_server_fixture  # noqa: F401

WHEN = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pricing.PRICING_FILE_ENV, raising=False)


def _expected(model: str, provider_id: str, when: datetime = WHEN, **tokens: int) -> float:
    return float(
        calc_price(
            Usage(**tokens), model_ref=model, provider_id=provider_id, genai_request_timestamp=when
        ).total_price
    )


def test_data_version_names_the_package_and_the_date_of_its_data() -> None:
    version = pricing.data_version()
    assert version.startswith(f"genai-prices {genai_prices_version}, data ")
    datetime.strptime(version.rsplit(" ", 1)[-1], "%Y-%m-%d")  # an ISO date
    table = load_table()
    assert table.models == {} and table.currency == "USD"
    assert table.date == version.rsplit(" ", 1)[-1]


# --- genai-prices ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("otel_provider", "model", "provider_id"),
    [
        ("openai", "gpt-4o", "openai"),
        ("anthropic", "claude-sonnet-4-5", "anthropic"),
        ("gcp.gemini", "gemini-2.5-flash", "google"),
        ("gcp.vertex_ai", "gemini-2.5-flash", "google"),
        ("x_ai", "grok-3", "x-ai"),
    ],
)
def test_calls_are_priced_by_provider_and_model_as_genai_prices_prices_them(
    otel_provider: str, model: str, provider_id: str
) -> None:
    cost = pricing.price_call(model, None, 12_000, 800, provider=otel_provider, when=WHEN)
    assert cost is not None
    assert cost.amount == pytest.approx(
        _expected(model, provider_id, input_tokens=12_000, output_tokens=800)
    )
    assert cost.amount > 0
    assert cost.source == "genai-prices" and cost.currency == "USD"
    assert cost.priced_as.startswith(f"{provider_id}:")
    assert cost.version == pricing.data_version()


def test_the_response_model_is_priced_before_the_request_model() -> None:
    cost = pricing.price_call(
        "gpt-4o", "gpt-4o-mini-2024-07-18", 1000, 100, provider="openai", when=WHEN
    )
    assert cost is not None and cost.priced_as == "openai:gpt-4o-mini"
    assert cost.amount == pytest.approx(
        _expected("gpt-4o-mini", "openai", input_tokens=1000, output_tokens=100)
    )


def test_the_server_called_says_who_served_the_call() -> None:
    # An OpenAI SDK pointed at Groq: the instrumentation still says "openai".
    cost = pricing.price_call(
        "llama-3.1-8b-instant",
        None,
        1000,
        100,
        provider="openai",
        server=("api.groq.com", 443),
        when=WHEN,
    )
    assert cost is not None and cost.priced_as.startswith("groq:")


def test_cached_input_tokens_are_part_of_input_and_charged_at_the_cached_rate() -> None:
    cost = pricing.price_call("gpt-4o", None, 1000, 100, 800, provider="openai", when=WHEN)
    uncached = pricing.price_call("gpt-4o", None, 1000, 100, provider="openai", when=WHEN)
    assert cost is not None and uncached is not None
    assert cost.amount == pytest.approx(
        _expected("gpt-4o", "openai", input_tokens=1000, cache_read_tokens=800, output_tokens=100)
    )
    assert cost.cached_input_amount == pytest.approx(
        _expected("gpt-4o", "openai", input_tokens=800, cache_read_tokens=800)
    )
    assert cost.cached_input_amount > 0 and cost.amount < uncached.amount
    assert cost.amount == pytest.approx(
        cost.input_amount + cost.cached_input_amount + cost.output_amount
    )


def test_cache_writes_are_charged_at_the_cache_write_rate() -> None:
    cost = pricing.price_call(
        "claude-sonnet-4-5",
        None,
        5000,
        100,
        1000,
        provider="anthropic",
        cache_creation_tokens=2000,
        when=WHEN,
    )
    assert cost is not None
    assert cost.amount == pytest.approx(
        _expected(
            "claude-sonnet-4-5",
            "anthropic",
            input_tokens=5000,
            cache_read_tokens=1000,
            cache_write_tokens=2000,
            output_tokens=100,
        )
    )
    assert cost.cache_creation_amount == pytest.approx(
        _expected("claude-sonnet-4-5", "anthropic", input_tokens=2000, cache_write_tokens=2000)
    )


def test_anthropic_style_input_without_its_cached_tokens_is_counted_whole() -> None:
    # Anthropic's own usage reports input_tokens beside cache reads, not including them.
    cost = pricing.price_call(
        "claude-sonnet-4-5", None, 100, 10, 4000, provider="anthropic", when=WHEN
    )
    assert cost is not None
    assert cost.amount == pytest.approx(
        _expected(
            "claude-sonnet-4-5",
            "anthropic",
            input_tokens=4100,
            cache_read_tokens=4000,
            output_tokens=10,
        )
    )


def test_reasoning_tokens_are_output_at_the_reasoning_rate_where_a_model_has_one() -> None:
    # sonar-deep-research prices reasoning apart; gpt-5 charges it as output.
    deep = pricing.price_call(
        "sonar-deep-research",
        None,
        1000,
        5000,
        provider="perplexity",
        reasoning_tokens=4000,
        when=WHEN,
    )
    assert deep is not None
    assert deep.amount == pytest.approx(
        _expected(
            "sonar-deep-research",
            "perplexity",
            input_tokens=1000,
            output_tokens=5000,
            output_reasoning_tokens=4000,
        )
    )
    plain = pricing.price_call(
        "sonar-deep-research", None, 1000, 5000, provider="perplexity", when=WHEN
    )
    assert plain is not None and deep.amount != pytest.approx(plain.amount)
    with_reasoning = pricing.price_call(
        "gpt-5", None, 1000, 5000, provider="openai", reasoning_tokens=4000, when=WHEN
    )
    without = pricing.price_call("gpt-5", None, 1000, 5000, provider="openai", when=WHEN)
    assert with_reasoning is not None and without is not None
    assert with_reasoning.amount == pytest.approx(without.amount)


def test_embeddings_cost_their_input() -> None:
    cost = cost_of("text-embedding-3-small", input_tokens=50_000)
    assert cost is not None and cost.output_amount == 0
    assert cost.amount == pytest.approx(
        _expected("text-embedding-3-small", "openai", datetime.now(UTC), input_tokens=50_000)
    )


def _price_change() -> tuple[str, str, datetime, datetime]:
    """A model of openai, anthropic or google whose price changed on a date, per genai-prices."""
    from genai_prices.data_snapshot import get_snapshot
    from genai_prices.types import StartDateConstraint

    for provider in get_snapshot().providers:
        if provider.id not in ("openai", "anthropic", "google"):
            continue
        for model in provider.models:
            if not isinstance(model.prices, list):
                continue
            for price in model.prices:
                if isinstance(price.constraint, StartDateConstraint):
                    day = datetime.combine(price.constraint.start_date, datetime.min.time(), UTC)
                    before, after = day - timedelta(days=1), day + timedelta(hours=12)
                    tokens = {"input_tokens": 100_000, "output_tokens": 10_000}
                    if _expected(model.id, provider.id, before, **tokens) != _expected(
                        model.id, provider.id, after, **tokens
                    ):
                        return provider.id, model.id, before, after
    pytest.skip("genai-prices records no dated price change for openai, anthropic or google")


def test_the_price_in_force_when_the_request_was_made_is_charged() -> None:
    provider, model, before, after = _price_change()
    old = pricing.price_call(model, None, 100_000, 10_000, provider=provider, when=before)
    new = pricing.price_call(model, None, 100_000, 10_000, provider=provider, when=after)
    assert old is not None and new is not None and old.amount != new.amount
    assert old.amount == pytest.approx(
        _expected(model, provider, before, input_tokens=100_000, output_tokens=10_000)
    )
    assert new.amount == pytest.approx(
        _expected(model, provider, after, input_tokens=100_000, output_tokens=10_000)
    )


def test_snapshot_and_prefixed_names_find_their_model() -> None:
    dated = cost_of("gpt-4o-mini-2024-07-18", 1000, 100)
    prefixed = pricing.price_call("openai/gpt-4o-mini", None, 1000, 100, provider="openai")
    assert dated is not None and prefixed is not None
    assert dated.priced_as == prefixed.priced_as == "openai:gpt-4o-mini"


def test_unknown_model_costs_unknown_not_zero() -> None:
    assert cost_of("my-private-model", input_tokens=10, output_tokens=10) is None
    assert pricing.price_call("my-private-model", None, 10, 10, provider="openai") is None


def test_negative_token_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        cost_of("gpt-4o-mini", input_tokens=-1)


def test_amounts_are_finite_for_large_counts() -> None:
    cost = pricing.price_call("gpt-5", None, 10**9, 10**9, provider="openai", when=WHEN)
    assert cost is not None and math.isfinite(cost.amount)
    assert cost.amount == pytest.approx(
        _expected("gpt-5", "openai", input_tokens=10**9, output_tokens=10**9)
    )


# --- local models ---------------------------------------------------------------------------------


def test_a_server_registered_as_local_is_free_from_its_next_call() -> None:
    # How a call is priced is resolved once a minute and kept: a registration must undo that.
    before = pricing.price_call("gpt-4o", None, 500, 500, server=("127.0.0.1", 18_998))
    assert before is not None and before.amount > 0
    pricing.register_local_server("127.0.0.1", 18_998)
    after = pricing.price_call("gpt-4o", None, 500, 500, server=("127.0.0.1", 18_998))
    assert after is not None and after.amount == 0.0 and after.source == "local"


def test_a_price_is_the_one_in_force_in_the_minute_of_the_request() -> None:
    provider, model, before, after = _price_change()
    for when in (before, after, before):  # the kept resolution is per minute, not the last one
        cost = pricing.price_call(model, None, 100_000, 10_000, provider=provider, when=when)
        assert cost is not None and cost.amount == pytest.approx(
            _expected(model, provider, when, input_tokens=100_000, output_tokens=10_000)
        )


def test_local_models_cost_zero_and_say_so() -> None:
    in_kernel = pricing.price_call("my-finetune", None, 500, 500, provider="o11ylab.local")
    pricing.register_local_server("127.0.0.1", 18_999)
    served = pricing.price_call("gpt-4o", None, 500, 500, server=("localhost", 18_999))
    for cost in (in_kernel, served):
        assert cost is not None and cost.amount == 0.0
        attributes = cost.attributes()
        assert attributes["gen_ai.usage.cost.amount"] == 0.0
        assert attributes["gen_ai.usage.cost.currency"] == "USD"
        assert attributes["gen_ai.usage.cost.source"] == "local"
        assert attributes["o11ylab.cost.priced_as"] == "local"


# --- the override file ----------------------------------------------------------------------------


def test_override_file_wins_and_prices_models_genai_prices_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "version": "team-1",
                "models": {
                    "gpt-4o-mini": {"input": 1.0, "cached_input": 0.5, "output": 2.0},
                    "in-house-7b": {"input": 0.05, "output": 0.05},
                },
            }
        )
    )
    monkeypatch.setenv(pricing.PRICING_FILE_ENV, str(path))
    table = load_table()
    assert table.version.endswith("+team-1") and table.files == (str(path),)
    assert "team-1" in pricing.data_version() and str(path) in pricing.data_version()

    negotiated = pricing.price_call(
        "gpt-4o-mini", None, 1_000_000, 1_000_000, 500_000, provider="openai"
    )
    assert negotiated is not None
    assert negotiated.amount == pytest.approx(0.5 + 0.25 + 2.0)
    assert negotiated.source == "override" and negotiated.version == "team-1"
    assert negotiated.attributes()["o11ylab.pricing.file"] == str(path)
    in_house = cost_of("in-house-7b", 1_000_000, 0)
    assert in_house is not None and in_house.amount == pytest.approx(0.05)
    untouched = pricing.price_call("gpt-4o", None, 1000, 0, provider="openai")
    assert untouched is not None and untouched.source == "genai-prices"
    # The user's price wins over the local 0 too (to charge local GPU time, say).
    local = pricing.price_call("in-house-7b", None, 1_000_000, 0, provider="o11ylab.local")
    assert local is not None and local.amount == pytest.approx(0.05)

    # Edited in place, the file is read again.
    path.write_text(json.dumps({"models": {"gpt-4o-mini": {"input": 2.0, "output": 2.0}}}))
    os.utime(path, (1, 1))
    edited = cost_of("gpt-4o-mini", 1_000_000, 0)
    assert edited is not None and edited.amount == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not valid JSON at line 1"),
        ("[1, 2]", "top level must be an object"),
        ('{"prices": {}}', 'needs a "models" object'),
        ('{"models": {"m": {"input": -1, "output": 1}}}', 'models["m"].input is negative'),
        (
            '{"models": {"m": {"input": "cheap", "output": 1}}}',
            'models["m"].input must be a number',
        ),
        ('{"models": {"m": {"inptu": 1, "output": 1}}}', "unknown key(s) inptu"),
        ('{"models": {"m": {"input": 1}}}', "chat model without an output price"),
        ('{"models": {"m": {"input": 1, "kind": "image"}}}', 'kind is "image"'),
        ('{"currency": "EUR", "models": {}}', "only USD"),
    ],
)
def test_malformed_override_names_the_file_and_the_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, problem: str
) -> None:
    path = tmp_path / "bad-prices.json"
    path.write_text(content)
    monkeypatch.setenv(pricing.PRICING_FILE_ENV, str(path))
    with pytest.raises(PricingError) as caught:
        load_table()
    message = str(caught.value)
    assert str(path) in message and "O11YLAB_PRICING_FILE" in message
    assert problem in message


def test_missing_override_file_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pricing.PRICING_FILE_ENV, str(tmp_path / "nope.json"))
    with pytest.raises(PricingError, match="no such file"):
        load_table()
    with pytest.raises(PricingError, match="no such file"):
        pricing.data_version()


# --- the enricher on a plain TracerProvider -------------------------------------------------------


class _Plain:
    """A TracerProvider and MeterProvider of the user's own, with o11ylab's enricher registry."""

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from o11ylab.enrichment import Enrichers

        self.enrichers = Enrichers()
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(self.enrichers)
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = provider.get_tracer("test")
        self.reader = InMemoryMetricReader()
        self.meter = MeterProvider(metric_readers=[self.reader]).get_meter("test")
        self.telemetry = SimpleNamespace(meter=self.meter, enrichers=self.enrichers)
        pricing.install(self.telemetry)

    def span(self, start: datetime | None = None, **attributes: Any) -> Any:
        start_ns = None if start is None else int(start.timestamp() * 1e9)
        self.tracer.start_span("chat", attributes=attributes, start_time=start_ns).end()
        return self.exporter.get_finished_spans()[-1]

    def cost_sum(self) -> float:
        data = self.reader.get_metrics_data()
        return (
            sum(
                point.value
                for rm in data.resource_metrics
                for sm in rm.scope_metrics
                for metric in sm.metrics
                if metric.name == "o11ylab.gen_ai.client.cost"
                for point in metric.data.data_points
            )
            if data
            else 0.0
        )


def _chat(**extra: Any) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 100,
        **extra,
    }


def test_enricher_costs_spans_of_any_provider_at_their_start_time() -> None:
    plain = _Plain()
    span = plain.span(
        WHEN,
        **_chat(
            **{
                "gen_ai.provider.name": "anthropic",
                "gen_ai.request.model": "claude-sonnet-4-5",
                "gen_ai.usage.cache_read.input_tokens": 400,
                "gen_ai.usage.cache_creation.input_tokens": 100,
            }
        ),
    )
    expected = _expected(
        "claude-sonnet-4-5",
        "anthropic",
        input_tokens=1000,
        cache_read_tokens=400,
        cache_write_tokens=100,
        output_tokens=100,
    )
    attributes = span.attributes
    assert attributes["gen_ai.usage.cost.amount"] == pytest.approx(expected)
    assert attributes["gen_ai.usage.cost.currency"] == "USD"
    assert attributes["gen_ai.usage.cost.source"] == "genai-prices"
    assert attributes["o11ylab.pricing.version"] == pricing.data_version()
    assert attributes["o11ylab.cost.priced_as"] == "anthropic:claude-sonnet-4-5"
    assert attributes["o11ylab.cost.cached_input_amount"] > 0
    assert plain.cost_sum() == pytest.approx(expected)


def test_the_cost_metric_sums_per_model_and_overflows_like_the_sdk() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from o11ylab.telemetry._deferred import SummedCounter

    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    counter = SummedCounter(meter, "c", keys=("op", "model"), unit="USD", description="", limit=2)
    counter.add(0.5, ("chat", "a"))
    counter.add(0.25, ("chat", "a"))
    counter.add(1.0, ("chat", None))  # no model attribute: absent from the point
    counter.add(2.0, ("chat", "b"))  # a third series past the limit of two
    counter.add(4.0, ("chat", "c"))

    def points() -> dict[frozenset[Any], float]:
        data = reader.get_metrics_data()
        assert data is not None
        (metric,) = [
            m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        ]
        assert metric.data.is_monotonic
        return {frozenset(p.attributes.items()): p.value for p in metric.data.data_points}

    overflow = frozenset({("otel.metric.overflow", True)})
    assert points() == {
        frozenset({("op", "chat"), ("model", "a")}): 0.75,
        frozenset({("op", "chat")}): 1.0,
        overflow: 6.0,
    }
    counter.add(1.0, ("chat", "a"))
    assert points()[frozenset({("op", "chat"), ("model", "a")})] == 1.75  # cumulative


def test_enricher_charges_the_price_of_the_spans_start() -> None:
    provider, model, before, after = _price_change()
    plain = _Plain()
    tokens = {"gen_ai.usage.input_tokens": 100_000, "gen_ai.usage.output_tokens": 10_000}
    for when in (before, after):
        span = plain.span(
            when,
            **{
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider,
                "gen_ai.request.model": model,
                **tokens,
            },
        )
        assert span.attributes["gen_ai.usage.cost.amount"] == pytest.approx(
            _expected(model, provider, when, input_tokens=100_000, output_tokens=10_000)
        )


def test_enricher_flags_unknown_models_and_prices_local_ones_at_zero() -> None:
    plain = _Plain()
    unknown = plain.span(
        **_chat(**{"gen_ai.provider.name": "openai", "gen_ai.request.model": "mystery"})
    )
    assert unknown.attributes["o11ylab.cost.unknown"] is True
    assert "gen_ai.usage.cost.amount" not in unknown.attributes
    local = plain.span(
        **_chat(
            **{
                "gen_ai.operation.name": "text_completion",
                "gen_ai.provider.name": semconv.PROVIDER_LOCAL,
                "gen_ai.request.model": "my-finetune",
            }
        )
    )
    assert local.attributes["gen_ai.usage.cost.amount"] == 0.0
    assert local.attributes["gen_ai.usage.cost.source"] == "local"


def test_spans_without_usage_or_of_other_operations_are_not_costed() -> None:
    plain = _Plain()
    failed = plain.span(**{"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"})
    retrieval = plain.span(**{"gen_ai.operation.name": "retrieval", "gen_ai.usage.input_tokens": 5})
    for span in (failed, retrieval):
        assert not any(
            key.startswith(("gen_ai.usage.cost", "o11ylab.cost")) for key in span.attributes
        )


def test_a_call_seen_by_two_instrumentations_is_costed_once() -> None:
    # langchain's chat span over the openai SDK's chat span, both carrying the call's usage.
    plain = _Plain()
    attributes = _chat(**{"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"})
    with (
        plain.tracer.start_as_current_span("chat gpt-4o", attributes=attributes),
        plain.tracer.start_as_current_span("chat gpt-4o", attributes=attributes),
    ):
        pass
    inner, outer = plain.exporter.get_finished_spans()
    assert inner.attributes["gen_ai.usage.cost.amount"] > 0
    assert outer.attributes["o11ylab.usage.counted_below"] is True
    assert "gen_ai.usage.cost.amount" not in outer.attributes
    assert plain.cost_sum() == pytest.approx(inner.attributes["gen_ai.usage.cost.amount"])


def test_uninstall_stops_costing_and_install_brings_it_back() -> None:
    plain = _Plain()
    pricing.uninstall(plain.telemetry)
    pricing.uninstall(plain.telemetry)  # idempotent
    assert "cost" not in plain.enrichers.names()
    span = plain.span(
        **_chat(**{"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"})
    )
    assert "gen_ai.usage.cost.amount" not in span.attributes
    pricing.install(plain.telemetry)
    span = plain.span(
        **_chat(**{"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"})
    )
    assert span.attributes["gen_ai.usage.cost.amount"] > 0


# --- cost on o11ylab's own spans, rolled up onto a traced cell ------------------------------------


def _operation_span(**attributes: object) -> object:
    from o11ylab.ai.client import instrument
    from o11ylab.telemetry import get_telemetry
    from o11ylab.testing import capture_spans

    instrument()  # installs the cost enricher
    tracer = get_telemetry().tracer
    with capture_spans() as spans, tracer.start_as_current_span("chat x", attributes=attributes):
        pass
    return spans[0]


def test_priced_span_gets_amount_parts_and_the_data_version() -> None:
    from o11ylab.testing import capture_metrics

    with capture_metrics() as metrics:
        span = _operation_span(
            **{
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                "gen_ai.provider.name": "openai",
                "gen_ai.usage.input_tokens": 1000,
                "gen_ai.usage.output_tokens": 100,
                "gen_ai.usage.cache_read.input_tokens": 400,
            }
        )
    expected = _expected(
        "gpt-4o-mini",
        "openai",
        datetime.now(UTC),
        input_tokens=1000,
        cache_read_tokens=400,
        output_tokens=100,
    )
    assert span.attributes["gen_ai.usage.cost.amount"] == pytest.approx(expected)
    assert span.attributes["o11ylab.cost.priced_as"] == "openai:gpt-4o-mini"
    assert span.attributes["o11ylab.pricing.version"] == pricing.data_version()
    assert metrics.sum(
        "o11ylab.gen_ai.client.cost", **{"gen_ai.request.model": "gpt-4o-mini"}
    ) == pytest.approx(expected)


@pytest.mark.integration
def test_traced_cell_carries_the_rolled_up_cost_of_its_calls(
    shell: object,
    local: LocalServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from o11ylab.testing import capture_metrics, capture_spans

    # Local models are free unless the user prices them: here, to see real sums.
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps(
            {
                "version": "cell-test",
                "models": {
                    local.chat_model: {"input": 1000.0, "output": 2000.0},
                    local.embedding_model: {"kind": "embeddings", "input": 100.0},
                },
            }
        )
    )
    monkeypatch.setenv(pricing.PRICING_FILE_ENV, str(prices))
    cell = (
        "from o11ylab.ai import chat, embed\n"
        "first = chat('What is a span?', max_tokens=3)\n"
        "second = chat('What is a trace?', max_tokens=4)\n"
        "vectors = embed(['spans nest', 'traces are trees'])\n"
    )
    with capture_spans() as spans, capture_metrics() as metrics:
        shell.run_cell_magic("traced", "costly-cell", cell)  # type: ignore[attr-defined]
    chats = [s for s in spans if s.name == f"chat {local.chat_model}"]
    (embeddings,) = [s for s in spans if s.name.startswith("embeddings")]
    (cell_span,) = [s for s in spans if s.name == "costly-cell"]
    assert all(s.parent.span_id == cell_span.context.span_id for s in [*chats, embeddings])

    tokens_in = sum(s.attributes["gen_ai.usage.input_tokens"] for s in [*chats, embeddings])
    expected = (
        sum(s.attributes["gen_ai.usage.input_tokens"] for s in chats) * 1000.0
        + (3 + 4) * 2000.0
        + embeddings.attributes["gen_ai.usage.input_tokens"] * 100.0
    ) / 1e6
    assert sum(s.attributes["gen_ai.usage.cost.amount"] for s in [*chats, embeddings]) == (
        pytest.approx(expected)
    )
    assert all(s.attributes["gen_ai.usage.cost.source"] == "override" for s in [*chats, embeddings])
    assert cell_span.attributes["o11ylab.cell.cost_usd"] == pytest.approx(expected)
    assert cell_span.attributes["o11ylab.cell.input_tokens"] == tokens_in
    assert cell_span.attributes["o11ylab.cell.output_tokens"] == 7
    assert f"${expected:.6f}" in capsys.readouterr().out  # the one-line cell summary
    assert metrics.sum(
        "o11ylab.gen_ai.client.cost", **{"gen_ai.request.model": local.chat_model}
    ) == pytest.approx(expected - embeddings.attributes["gen_ai.usage.cost.amount"])
