"""The price table and its arithmetic: what a call costs, what an override changes, what fails."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from o11ylab import pricing
from o11ylab.pricing import PricingError, cost_of, load_table

from .ai_support import LocalServer, local_fixture, local_server_fixture  # noqa: F401


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pricing.PRICING_FILE_ENV, raising=False)


def test_bundled_table_states_version_date_and_source() -> None:
    table = load_table()
    assert table.version and table.date and table.source.startswith("https://")
    assert table.currency == "USD"
    assert table.models["gpt-4o-mini"].kind == "chat"
    assert table.models["text-embedding-3-small"].kind == "embeddings"
    local = [name for name, price in table.models.items() if price.local]
    assert local and all(table.models[n].input == 0 for n in local)


def test_chat_cost_is_tokens_times_price_per_million() -> None:
    # gpt-4o-mini: 0.15 in, 0.60 out per 1M tokens.
    cost = cost_of("gpt-4o-mini", input_tokens=1_000_000, output_tokens=500_000)
    assert cost is not None
    assert cost.input_amount == pytest.approx(0.15)
    assert cost.output_amount == pytest.approx(0.30)
    assert cost.amount == pytest.approx(0.45)
    assert cost.priced_as == "gpt-4o-mini"


def test_cached_input_tokens_are_part_of_input_and_charged_at_the_cached_rate() -> None:
    # 1,000 prompt tokens of which 800 cached: 200 at 2.50 + 800 at 1.25 (+ 100 out at 10.00).
    cost = cost_of("gpt-4o", input_tokens=1000, cached_input_tokens=800, output_tokens=100)
    assert cost is not None
    assert cost.input_amount == pytest.approx(200 * 2.5 / 1e6)
    assert cost.cached_input_amount == pytest.approx(800 * 1.25 / 1e6)
    assert cost.output_amount == pytest.approx(100 * 10.0 / 1e6)
    assert cost.amount == pytest.approx((200 * 2.5 + 800 * 1.25 + 100 * 10.0) / 1e6)


def test_cached_tokens_without_a_cached_price_cost_the_input_price() -> None:
    cost = cost_of("gpt-3.5-turbo", input_tokens=100, cached_input_tokens=100)
    assert cost is not None and cost.amount == pytest.approx(100 * 0.5 / 1e6)


def test_embedding_cost_has_only_input() -> None:
    cost = cost_of("text-embedding-3-small", input_tokens=50_000)
    assert cost is not None
    assert cost.amount == pytest.approx(50_000 * 0.02 / 1e6)
    assert cost.output_amount == 0


def test_snapshot_names_and_prefixed_names_find_their_model() -> None:
    table = load_table()
    assert table.lookup("gpt-4o-mini-2024-07-18") == ("gpt-4o-mini", table.models["gpt-4o-mini"])
    assert table.lookup("GPT-4O") is not None
    assert table.lookup("HuggingFaceTB/SmolLM2-135M-Instruct")[0] == "SmolLM2-135M-Instruct"
    # A longer name is a different model, never its cheaper cousin.
    assert table.lookup("gpt-4o-mini-realtime-preview") is None


def test_unknown_model_costs_unknown_not_zero() -> None:
    assert cost_of("my-private-model", input_tokens=10, output_tokens=10) is None


def test_local_models_cost_zero() -> None:
    cost = cost_of("SmolLM2-135M-Instruct", input_tokens=500, output_tokens=500)
    assert cost is not None and cost.amount == 0.0


def test_attributes_follow_the_cost_proposal() -> None:
    cost = cost_of("gpt-4o-mini", input_tokens=10, output_tokens=5)
    assert cost is not None
    attributes = cost.attributes()
    assert attributes["gen_ai.usage.cost.amount"] == pytest.approx(cost.amount)
    assert attributes["gen_ai.usage.cost.currency"] == "USD"
    assert attributes["gen_ai.usage.cost.source"] == "local"
    assert attributes["o11ylab.pricing.version"] == load_table().version


def test_override_file_is_merged_over_the_bundled_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({
        "version": "team-1",
        "models": {
            "gpt-4o-mini": {"input": 1.0, "output": 2.0},
            "in-house-7b": {"input": 0.05, "output": 0.05},
        },
    }))
    monkeypatch.setenv(pricing.PRICING_FILE_ENV, str(path))
    table = load_table()
    assert table.version.endswith("+team-1")
    assert cost_of("gpt-4o-mini", 1_000_000, 1_000_000).amount == pytest.approx(3.0)
    assert cost_of("in-house-7b", 1_000_000, 0).amount == pytest.approx(0.05)
    assert cost_of("gpt-4o", 1_000_000, 0).amount == pytest.approx(2.5)  # untouched entries stay

    # Edited in place, the file is read again.
    path.write_text(json.dumps({"models": {"gpt-4o-mini": {"input": 2.0, "output": 2.0}}}))
    import os

    os.utime(path, (1, 1))
    assert cost_of("gpt-4o-mini", 1_000_000, 0).amount == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not valid JSON at line 1"),
        ("[1, 2]", "top level must be an object"),
        ('{"prices": {}}', 'needs a "models" object'),
        ('{"models": {"m": {"input": -1, "output": 1}}}', 'models["m"].input is negative'),
        ('{"models": {"m": {"input": "cheap", "output": 1}}}',
         'models["m"].input must be a number'),
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


def test_negative_token_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        cost_of("gpt-4o-mini", input_tokens=-1)


def test_amounts_are_finite_for_large_counts() -> None:
    cost = cost_of("gpt-5", input_tokens=10**9, output_tokens=10**9)
    assert cost is not None and math.isfinite(cost.amount)
    assert cost.amount == pytest.approx(1.25 * 1000 + 10.0 * 1000)


# --- cost on spans, in the metric, and rolled up onto a traced cell ------------------------------


def _operation_span(**attributes: object) -> object:
    from o11ylab.ai.client import instrument
    from o11ylab.telemetry import get_telemetry
    from o11ylab.testing import capture_spans

    instrument()  # installs the cost hook
    tracer = get_telemetry().tracer
    with capture_spans() as spans, tracer.start_as_current_span("chat x", attributes=attributes):
        pass
    return spans[0]


def test_unknown_model_span_gets_a_flag_and_no_amount() -> None:
    span = _operation_span(**{"gen_ai.operation.name": "chat", "gen_ai.request.model": "mystery",
                              "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 2})
    assert span.attributes["o11ylab.cost.unknown"] is True
    assert "gen_ai.usage.cost.amount" not in span.attributes


def test_priced_span_gets_amount_parts_and_the_table_version() -> None:
    from o11ylab.testing import capture_metrics

    with capture_metrics() as metrics:
        span = _operation_span(**{
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18", "gen_ai.provider.name": "openai",
            "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100,
            "gen_ai.usage.cache_read.input_tokens": 400,
        })
    expected = (600 * 0.15 + 400 * 0.075 + 100 * 0.6) / 1e6
    assert span.attributes["gen_ai.usage.cost.amount"] == pytest.approx(expected)
    assert span.attributes["o11ylab.cost.cached_input_amount"] == pytest.approx(400 * 0.075 / 1e6)
    assert span.attributes["o11ylab.cost.priced_as"] == "gpt-4o-mini"
    assert span.attributes["o11ylab.pricing.version"] == load_table().version
    assert metrics.sum("o11ylab.gen_ai.client.cost",
                       **{"gen_ai.request.model": "gpt-4o-mini"}) == pytest.approx(expected)


def test_spans_without_usage_or_of_other_operations_are_not_costed() -> None:
    failed = _operation_span(**{"gen_ai.operation.name": "chat",
                                "gen_ai.request.model": "gpt-4o-mini"})
    retrieval = _operation_span(**{"gen_ai.operation.name": "retrieval",
                                   "gen_ai.usage.input_tokens": 5})
    for span in (failed, retrieval):
        assert not any(key.startswith(("gen_ai.usage.cost", "o11ylab.cost"))
                       for key in span.attributes)


@pytest.mark.integration
def test_traced_cell_carries_the_rolled_up_cost_of_its_calls(
    shell: object, local: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from o11ylab.testing import capture_metrics, capture_spans

    # Local models are free unless the user prices them: here, to see real sums.
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"version": "cell-test", "models": {
        local.chat_model: {"input": 1000.0, "output": 2000.0},
        local.embedding_model: {"kind": "embeddings", "input": 100.0},
    }}))
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
    expected = (sum(s.attributes["gen_ai.usage.input_tokens"] for s in chats) * 1000.0
                + (3 + 4) * 2000.0
                + embeddings.attributes["gen_ai.usage.input_tokens"] * 100.0) / 1e6
    assert sum(s.attributes["gen_ai.usage.cost.amount"] for s in [*chats, embeddings]) == (
        pytest.approx(expected))
    assert cell_span.attributes["o11ylab.cell.cost_usd"] == pytest.approx(expected)
    assert cell_span.attributes["o11ylab.cell.input_tokens"] == tokens_in
    assert cell_span.attributes["o11ylab.cell.output_tokens"] == 7
    assert f"${expected:.6f}" in capsys.readouterr().out  # the one-line cell summary
    assert metrics.sum("o11ylab.gen_ai.client.cost", **{"gen_ai.request.model": local.chat_model}
                       ) == pytest.approx(expected - embeddings.attributes[
                           "gen_ai.usage.cost.amount"])


def test_models_run_in_the_kernel_cost_zero_whatever_their_name() -> None:
    span = _operation_span(**{"gen_ai.operation.name": "text_completion",
                              "gen_ai.provider.name": "o11ylab.local",
                              "gen_ai.request.model": "my-finetune",
                              "gen_ai.usage.input_tokens": 50, "gen_ai.usage.output_tokens": 20})
    assert span.attributes["gen_ai.usage.cost.amount"] == 0.0
    assert span.attributes["o11ylab.cost.priced_as"] == "local"
