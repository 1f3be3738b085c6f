"""Every environment variable the package reads is in README's configuration table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

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


# Reading the environment outside config.py that is not reading a setting: copying the whole
# environment for a child process, and saving a variable to put it back after setting it.
NOT_SETTINGS = {
    # The OPENAI_* values before the relay, restored at unload, and whether that restore would
    # undo what the user set since.
    ("o11ylab/local_openai.py", "_saved"),
    ("o11ylab/local_openai.py", "ours_still_set"),
    ("o11ylab/runner.py", "saved"),  # the same around a run's kernels
    ("o11ylab/serve/_launcher.py", "env"),  # the whole environment, copied for the child server
}


def _environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def environment_reads(path: Path) -> list[str]:
    """Lines of ``path`` that read one variable of the environment: os.environ.get/[...]/in,
    os.getenv, or ``env = os.environ`` to read it through another name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    relative = str(path.relative_to(ROOT))
    allowed_targets = {name for file, name in NOT_SETTINGS if file == relative}
    reads: list[str] = []

    class Finder(ast.NodeVisitor):
        target: str | None = None

        def visit_Assign(self, node: ast.Assign) -> None:
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            self.target = names[0] if names else None
            self.generic_visit(node)
            self.target = None

        def visit_Call(self, node: ast.Call) -> None:
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and func.attr == "get"
                and _environ(func.value)
                and self.target not in allowed_targets
            ) or (
                isinstance(func, ast.Attribute)
                and func.attr == "getenv"
                and isinstance(func.value, ast.Name)
                and func.value.id == "os"
            ):
                reads.append(f"{relative}:{node.lineno}")
            self.generic_visit(node)

        def visit_Subscript(self, node: ast.Subscript) -> None:
            if _environ(node.value) and isinstance(node.ctx, ast.Load):
                reads.append(f"{relative}:{node.lineno}")
            self.generic_visit(node)

        def visit_Compare(self, node: ast.Compare) -> None:
            if any(_environ(c) for c in node.comparators):
                reads.append(f"{relative}:{node.lineno}")
            self.generic_visit(node)

        def visit_IfExp(self, node: ast.IfExp) -> None:
            # env = os.environ if env is None else env: reading it through another name.
            if (
                _environ(node.body) or _environ(node.orelse)
            ) and self.target not in allowed_targets:
                reads.append(f"{relative}:{node.lineno}")
            self.generic_visit(node)

    Finder().visit(tree)
    return reads


def test_only_config_reads_settings_from_the_environment() -> None:
    reads = [
        read
        for path in sorted((ROOT / "o11ylab").rglob("*.py"))
        if path.name != "config.py" or path.parent.name != "o11ylab"
        for read in environment_reads(path)
    ]
    assert not reads, f"read these through o11ylab.config: {reads}"


def test_the_reads_scan_finds_each_way_of_reading(tmp_path: Path) -> None:
    probe = ROOT / "o11ylab" / "_probe_settings_scan.py"  # inside the package, for the path
    source = (
        "import os\n"
        "a = os.environ.get('X')\n"
        "b = os.getenv('X')\n"
        "c = os.environ['X']\n"
        "d = 'X' in os.environ\n"
        "env = os.environ if env is None else env\n"
        "os.environ['Y'] = '1'\n"  # a write: not a read
        "child = dict(os.environ)\n"  # a copy for a child process: not a read
    )
    probe.write_text(source, encoding="utf-8")
    try:
        assert [r.rsplit(":", 1)[1] for r in environment_reads(probe)] == ["2", "3", "4", "5", "6"]
    finally:
        probe.unlink()
