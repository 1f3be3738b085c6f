"""Parameter sweeps for ``o11ylab run``: ``--grid NAME=V1,V2`` and ``--parameters-file FILE``.

Everything here runs before the first notebook does, so a typo in a grid or a parameter no
notebook has stops the run with one line instead of after an hour of runs.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import O11yLabError

__all__ = [
    "SweepError",
    "Task",
    "load_parameters_file",
    "notebook_parameters",
    "parse_grid",
    "plan",
]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What a value may keep in a file name; anything else becomes "-".
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


class SweepError(O11yLabError, ValueError):
    """A grid or a parameters file o11ylab cannot use; the message says what to fix."""


@dataclass(frozen=True)
class Task:
    """One notebook run: a notebook with one combination of parameters."""

    notebook: Path
    parameters: dict[str, Any]  # the whole set papermill injects (-p values included)
    swept: dict[str, Any]  # the part that varies, which the output name spells out
    output_name: str


def parse_value(raw: str) -> Any:
    """A value as JSON when it reads as JSON (7, 0.5, true, "x"), else the string itself."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["model=a,b", "n=1,2"]`` → ``{"model": ["a", "b"], "n": [1, 2]}``, checked."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, equals, values = item.partition("=")
        name = name.strip()
        if not equals or not _NAME.fullmatch(name):
            raise SweepError(
                f"--grid {item!r} is not NAME=V1,V2,...: NAME is a Python identifier (the "
                "variable in the notebook's parameters cell), e.g. --grid n_items=5,10."
            )
        parts = [part.strip() for part in values.split(",")]
        if not values.strip() or any(not part for part in parts):
            raise SweepError(
                f"--grid {item!r} has an empty value: give one or more values separated by "
                "commas, e.g. --grid n_items=5,10 (lists and other values with commas go in "
                "--parameters-file)."
            )
        if name in grid:
            raise SweepError(
                f"--grid names {name} twice: put all its values in one --grid {name}=V1,V2."
            )
        grid[name] = [parse_value(part) for part in parts]
    return grid


def load_parameters_file(path: Path) -> list[dict[str, Any]]:
    """A YAML or JSON list of parameter sets (mappings of name to value)."""
    # papermill depends on PyYAML (no inline types, and no stubs in the dev extra).
    import yaml  # type: ignore[import-untyped]

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SweepError(
            f"--parameters-file {path}: cannot read it ({exc.strerror or exc})."
        ) from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        where = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SweepError(f"--parameters-file {path} is not valid JSON or YAML: {where}") from None
    if not isinstance(data, list) or not data:
        raise SweepError(
            f"--parameters-file {path} must hold a non-empty list of parameter sets, such as "
            "[{n_items: 5}, {n_items: 10}]."
        )
    sets: list[dict[str, Any]] = []
    for position, item in enumerate(data, start=1):
        if not isinstance(item, dict) or not item:
            raise SweepError(
                f"--parameters-file {path}: entry {position} is not a mapping of parameter "
                "names to values."
            )
        for name in item:
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise SweepError(
                    f"--parameters-file {path}: entry {position} names {name!r}, which is not "
                    "a Python identifier."
                )
        sets.append(dict(item))
    return sets


def notebook_parameters(notebook: Path) -> set[str] | None:
    """Names assigned in the notebook's ``parameters``-tagged cell; None when it has none."""
    try:
        nb = json.loads(notebook.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for cell in nb.get("cells") or ():
        tags = (cell.get("metadata") or {}).get("tags") or ()
        if cell.get("cell_type") != "code" or "parameters" not in tags:
            continue
        source = cell.get("source") or ""
        source = "".join(source) if isinstance(source, list) else source
        # Magics and shell lines are not Python; papermill's parameters cell rarely has them.
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        try:
            tree = ast.parse("\n".join(lines))
        except SyntaxError:
            return None
        names: set[str] = set()
        for node in tree.body:
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            for target in targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        names.add(leaf.id)
        return names
    return None


def _combinations(grid: dict[str, list[Any]], sets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each parameters-file set with each grid combination (cartesian); one empty set if none."""
    grid_sets = [
        dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())
    ]
    return [{**base, **extra} for base in (sets or [{}]) for extra in (grid_sets or [{}])]


def _label(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return _UNSAFE.sub("-", text).strip("-")[:40] or "-"


def output_name(notebook: Path, swept: dict[str, Any]) -> str:
    """``quickstart__n_items=7__model=tiny.ipynb``: the parameters readable from the name."""
    if not swept:
        return notebook.name
    return notebook.stem + "".join(f"__{k}={_label(v)}" for k, v in swept.items()) + ".ipynb"


def plan(
    notebooks: Sequence[Path],
    common: dict[str, Any],
    grid: dict[str, list[Any]] | None = None,
    sets: list[dict[str, Any]] | None = None,
) -> list[Task]:
    """One task per notebook and parameter combination, checked before anything runs.

    A swept parameter must be in some notebook's ``parameters`` cell. Each notebook gets only
    the swept parameters its cell has, and a combination it cannot tell apart from another
    runs once (a notebook without ``n_items`` does not run three times for ``n_items=1,2,3``).
    """
    grid, sets = grid or {}, sets or []
    combos = _combinations(grid, sets)
    swept_names = list(dict.fromkeys(name for combo in combos for name in combo))
    known = {notebook: notebook_parameters(notebook) for notebook in notebooks}
    if swept_names:
        everyone = set().union(*(names or set() for names in known.values()))
        missing = [name for name in swept_names if name not in everyone]
        if missing:
            source = "--parameters-file" if sets and not grid else "the sweep"
            raise SweepError(
                f"{source} names {', '.join(missing)}, which no notebook's parameters cell "
                f"assigns (cells tagged 'parameters' in {', '.join(n.name for n in notebooks)}). "
                "Check the spelling, or tag the notebook's parameters cell."
            )
    tasks: list[Task] = []
    names_used: dict[str, int] = {}
    for notebook in notebooks:
        has = known[notebook] or set()
        seen: list[dict[str, Any]] = []
        for combo in combos:
            swept = {k: v for k, v in combo.items() if k in has}
            if swept in seen:
                continue
            seen.append(swept)
            name = output_name(notebook, swept)
            # Two values that only differ in characters a file name cannot keep.
            count = names_used.get(name, 0)
            names_used[name] = count + 1
            if count:
                name = f"{name[: -len('.ipynb')]}__{count + 1}.ipynb"
            tasks.append(Task(notebook, {**common, **swept}, swept, name))
    return tasks
