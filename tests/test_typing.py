"""The AI helpers' public surface stays typed: every lazy name of ``o11ylab.ai`` is also
imported under ``TYPE_CHECKING`` and listed in ``__all__``, so a type checker sees its real type.

(Running mypy itself on a snippet takes 10-50 s of CPU with a cold cache here, too slow for the
suite; ``make lint``'s strict mypy run covers the package.)"""

from __future__ import annotations

from pathlib import Path


def test_lazy_names_all_and_type_checking_imports_agree() -> None:
    import ast

    from o11ylab import ai

    tree = ast.parse(Path(ai.__file__).read_text(encoding="utf-8"))
    typed: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom)
                typed.update({alias.name: str(statement.module) for alias in statement.names})
    assert typed == ai._LAZY
    assert set(ai.__all__) == set(ai._LAZY) | {
        "AsyncChatStream",
        "ChatResult",
        "ChatStream",
        "Usage",
        "achat",
        "chat",
    }
    for name in ai.__all__:  # and each one imports
        assert getattr(ai, name) is not None
