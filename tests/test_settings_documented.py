"""Every environment variable the package reads is in README's configuration table."""

from __future__ import annotations

import re

from .conftest import ROOT

# How the package reads a variable: env.get("X"), os.environ["X"], _flag(env, "X", ...), a
# FOO_ENV = "X" constant, or any literal with one of the families' prefixes.
READS = (
    r'(?:environ|env)\.get\(\s*"([A-Z][A-Z0-9_]+)"',
    r'\b_[a-z_]+\(\s*env,\s*"([A-Z][A-Z0-9_]+)"',
    r'\b[A-Z_]*ENV[A-Z_]*\s*(?::\s*\w+\s*)?=\s*"([A-Z][A-Z0-9_]+)"',
    r'environ\[\s*"([A-Z][A-Z0-9_]+)"\s*\]',
    r'"((?:O11YLAB|OTEL|OPENAI|CHROMA)_[A-Z0-9_]+)"',
)


def read_by_the_package() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "o11ylab").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        for pattern in READS:
            names.update(re.findall(pattern, source))
    return names


def documented() -> set[str]:
    """Names in the first column of README's table; `…_X` continues the cell's first name."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for row in table.splitlines():
        if not row.startswith("| `"):
            continue
        cell = row.split("|")[1]
        first = ""
        for name in re.findall(r"`([^`]+)`", cell):
            if name.startswith("…_") and first:
                names.add(first.rsplit("_", 1)[0] + name[1:])
            else:
                first = first or name
                names.add(name)
    return names


def test_the_scan_finds_what_config_reads() -> None:
    found = read_by_the_package()
    # One of each way of reading, so a scan that stopped matching would fail here.
    assert {
        "O11YLAB_AUTOTRACE",
        "OTEL_METRIC_EXPORT_INTERVAL",
        "CHROMA_SSL",
        "O11YLAB_SERVE_START_TIMEOUT",
        "LOCAL_MODEL_NAME",
    } <= found
    assert "OTEL_EXPORTER_OTLP_PROTOCOL" in documented()


def test_readme_lists_every_variable_the_package_reads() -> None:
    missing = sorted(read_by_the_package() - documented())
    assert not missing, f"add these to README's Configuration table: {missing}"
