"""Trace the user's own AI code: every installed GenAI instrumentor, activated lazily.

``%load_ext o11ylab`` (and ``o11ylab.init()`` in a plain process) finds every instrumentor
declared under the standard ``opentelemetry_instrumentor`` entry-point group that belongs to
the GenAI family: the official ``opentelemetry-instrumentation-genai-*`` packages (openai,
anthropic, langchain, llama-index, openai-agents, ...), ``opentelemetry-instrumentation-google-
genai``, and o11ylab's own (chromadb, transformers, sentence_transformers, openai_http). Other instrumentors
in that group (requests, sqlite3, ...) are left to ``opentelemetry-instrument``: a notebook
does not want a span per HTTP request of every library.

Nothing is imported up front. Each instrumentor waits behind a post-import hook on its
library's module and is instrumented the moment that module is first imported, or at once if
it already was. ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` (entry-point names, comma-separated,
``*`` for all) turns any of them off, as it does for ``opentelemetry-instrument``.

``deactivate()`` uninstruments what this module instrumented and nothing else: an
instrumentor the user had already switched on is recorded as theirs and left alone.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

from .._say import say

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "Instrumentation",
    "InstrumentorEntry",
    "activate",
    "deactivate",
    "ensure",
    "get",
    "status",
]

GROUP = "opentelemetry_instrumentor"
DISABLED_ENV = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"

# The module whose import wakes each instrumentor, where it is not the entry point's name.
# An entry point not listed here waits for the module of its own name.
_TRIGGER_MODULES = {
    "langchain": "langchain_core",
    "llama-index": "llama_index.core",
    "llama_index": "llama_index.core",
    "llamaindex": "llama_index.core",
    "openai-agents": "agents",
    "openai_agents": "agents",
    "google_genai": "google.genai",
    "google-genai": "google.genai",
    "bedrock": "botocore",
    "botocore": "botocore",
    "vertexai": "vertexai",
    "sentence-transformers": "sentence_transformers",
    "openai_http": "openai",
}
_OWN_DISTRIBUTION = "o11ylab"


def is_genai_distribution(name: str) -> bool:
    """The GenAI family: the official ``opentelemetry-instrumentation-genai-*`` packages (and
    google-genai's, named before the family was), plus o11ylab's own instrumentors."""
    canonical = name.lower().replace("_", "-")
    return (
        canonical.startswith("opentelemetry-instrumentation-genai-")
        or canonical == "opentelemetry-instrumentation-google-genai"
        or canonical == _OWN_DISTRIBUTION
    )


def disabled_names(env: dict[str, str] | None = None) -> set[str]:
    from ..config import load_instrumentation

    return set(load_instrumentation(env).disabled)


def is_disabled(name: str, disabled: set[str] | None = None) -> bool:
    """Whether ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names ``name`` (or says ``*``)."""
    disabled = disabled_names() if disabled is None else disabled
    return "*" in disabled or name in disabled


@dataclass
class InstrumentorEntry:
    """One instrumentor and what happened to it. ``state`` is one of: ``waiting`` (for its
    library's import), ``instrumented``, ``yours`` (instrumented before o11ylab loaded; left
    alone), ``disabled``, ``skipped`` (its library's version does not fit; see ``reason``),
    ``failed`` (see ``reason``)."""

    name: str
    module: str
    target: str
    distribution: str
    distribution_version: str
    state: str = "waiting"
    reason: str = ""
    library: str = ""
    library_version: str = ""
    _entry_point: Any = field(default=None, repr=False)
    _instrumentor: Any = field(default=None, repr=False)

    def row(self) -> dict[str, str]:
        return {
            "name": self.name,
            "library": self.library or self.module,
            "library_version": self.library_version,
            "instrumentor": f"{self.distribution} {self.distribution_version}".strip(),
            "state": self.state,
            "reason": self.reason,
        }


class Instrumentation:
    """The process's set of GenAI instrumentors. ``activate`` once; ``deactivate`` undoes."""

    def __init__(self) -> None:
        self.entries: list[InstrumentorEntry] = []
        self.active = False
        self._providers: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._generation = 0  # hooks registered by an earlier activation do nothing

    # -- discovery ---------------------------------------------------------------------------

    @staticmethod
    def discover() -> list[InstrumentorEntry]:
        entries: dict[str, InstrumentorEntry] = {}
        for point in metadata.entry_points(group=GROUP):
            dist = getattr(point, "dist", None)
            dist_name = dist.name if dist is not None else ""
            if not is_genai_distribution(dist_name):
                continue
            if point.name in entries:  # an editable install can list a distribution twice
                continue
            entries[point.name] = InstrumentorEntry(
                name=point.name,
                module=_TRIGGER_MODULES.get(point.name, point.name.replace("-", "_")),
                target=point.value,
                distribution=dist_name,
                distribution_version=dist.version if dist is not None else "",
                _entry_point=point,
            )
        return sorted(entries.values(), key=lambda e: e.name)

    # -- life cycle --------------------------------------------------------------------------

    def activate(
        self,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        logger_provider: Any = None,
    ) -> None:
        """Instrument what is imported, and hook the rest to its first import. Idempotent."""
        with self._lock:
            if self.active:
                return
            self.active = True
            self._generation += 1
            self._providers = {
                k: v
                for k, v in (
                    ("tracer_provider", tracer_provider),
                    ("meter_provider", meter_provider),
                    ("logger_provider", logger_provider),
                )
                if v is not None
            }
            disabled = disabled_names()
            self.entries = self.discover()
            waiting = []
            for entry in self.entries:
                if is_disabled(entry.name, disabled):
                    entry.state, entry.reason = "disabled", f"{DISABLED_ENV} names it"
                else:
                    waiting.append(entry)
        import wrapt

        generation = self._generation
        for entry in waiting:
            if entry.module in sys.modules:
                self._instrument(entry, generation)
            else:
                # wrapt calls the hook once the module has finished importing (at once if it
                # already has: a race with another thread's import is harmless).
                def hook(_module: ModuleType, e: InstrumentorEntry = entry) -> None:
                    self._instrument(e, generation)

                wrapt.register_post_import_hook(hook, entry.module)

    def _instrument(self, entry: InstrumentorEntry, generation: int) -> None:
        target = getattr(entry._entry_point, "module", None)
        if target and _half_imported(target):
            # The library's import came from the instrumentor's own module, which is still
            # being imported (a notebook that imports the official OpenAIInstrumentor before
            # openai): its class does not exist yet. Finish in a thread that first waits for
            # that import (the module's import lock) and takes the loader's lock only after,
            # so an import that fires another entry's hook meanwhile cannot deadlock with it.
            threading.Thread(
                target=self._instrument_after_import,
                args=(entry, generation, target),
                name=f"o11ylab-instrument-{entry.name}",
                daemon=True,
            ).start()
            return
        with self._lock:
            if not self.active or generation != self._generation or entry.state != "waiting":
                return
            try:
                instrumentor_class = entry._entry_point.load()
                instrumentor = instrumentor_class()
                entry._instrumentor = instrumentor
                entry.library, entry.library_version = _library_of(instrumentor, entry.module)
                if instrumentor.is_instrumented_by_opentelemetry:
                    entry.state = "yours"
                    entry.reason = "instrumented before o11ylab loaded; left as it is"
                    return
                conflict = _conflict(instrumentor)
                if conflict:
                    entry.state, entry.reason = "skipped", conflict
                    return
                # Instrumenting can import the library (chromadb's instrumentor imports
                # chromadb), which fires this entry's own post-import hook in this thread:
                # the state makes that nested call a no-op instead of a second patch.
                entry.state = "instrumenting"
                instrumentor.instrument(skip_dep_check=True, **self._providers)
                entry.state = "instrumented"
            except Exception as exc:  # noqa: BLE001 - an instrumentor must never break the user's import
                entry.state = "failed"
                entry.reason = f"{type(exc).__name__}: {exc}"[:300]
                say(
                    f"could not instrument {entry.module} with {entry.target} "
                    f"({entry.reason}); the library works untraced."
                )

    def _instrument_after_import(
        self, entry: InstrumentorEntry, generation: int, module: str
    ) -> None:
        import importlib

        try:
            importlib.import_module(module)  # returns once the other thread's import is done
        except Exception:  # noqa: BLE001 - that import failed: _instrument reports it below
            pass
        if not _half_imported(module):
            self._instrument(entry, generation)

    def deactivate(self) -> None:
        """Uninstrument everything ``activate`` instrumented; leave the user's own alone."""
        with self._lock:
            if not self.active:
                return
            self.active = False
            self._generation += 1
            for entry in self.entries:
                if entry.state == "instrumented" and entry._instrumentor is not None:
                    try:
                        entry._instrumentor.uninstrument()
                    except Exception as exc:  # noqa: BLE001 - one instrumentor failing must not stop the rest
                        say(f"uninstrumenting {entry.module} failed ({type(exc).__name__}: {exc})")
                        continue
                    entry.state = "waiting"

    def ensure(self, name: str) -> None:
        """Switch on instrumentor ``name`` now, for o11ylab's own helpers (``VectorStore``, the
        local engine) that must make spans whether or not ``%load_ext`` ran. Through the loader
        when it is active (so unload undoes it), else directly on the global providers; never
        against ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``. Idempotent."""
        with self._lock:
            if self.active:
                for entry in self.entries:
                    if entry.name == name:
                        instrumentor = entry._instrumentor
                        if (
                            entry.state in ("instrumented", "yours")
                            and instrumentor is not None
                            and not instrumentor.is_instrumented_by_opentelemetry
                        ):
                            entry.state = "waiting"  # someone uninstrumented it since
                        if entry.state == "waiting":
                            self._instrument(entry, self._generation)
                        return
            if is_disabled(name):
                return
            point = next(
                (
                    p
                    for p in metadata.entry_points(group=GROUP, name=name)
                    if is_genai_distribution(getattr(p.dist, "name", ""))
                ),
                None,
            )
            if point is None:
                return
            instrumentor = point.load()()
            if not instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.instrument(skip_dep_check=True)

    def status(self) -> list[dict[str, str]]:
        with self._lock:
            return [entry.row() for entry in self.entries]

    def instrumented(self) -> list[str]:
        with self._lock:
            return [e.name for e in self.entries if e.state in ("instrumented", "yours")]


def _half_imported(module: str) -> bool:
    """Whether ``module`` is in the middle of its import (in sys.modules, not yet executed)."""
    loading = sys.modules.get(module)
    spec = getattr(loading, "__spec__", None) if loading is not None else None
    return bool(getattr(spec, "_initializing", False))


def _library_of(instrumentor: Any, module: str) -> tuple[str, str]:
    """The distribution the instrumentor instruments and its installed version."""
    try:
        requirements = list(instrumentor.instrumentation_dependencies())
    except Exception:  # noqa: BLE001 - a third-party instrumentor may raise anything
        requirements = []
    from packaging.requirements import InvalidRequirement, Requirement

    for raw in requirements:
        try:
            name = Requirement(raw).name
        except InvalidRequirement:
            continue
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return module, getattr(sys.modules.get(module), "__version__", "")


def _conflict(instrumentor: Any) -> str:
    from opentelemetry.instrumentation.dependencies import get_dependency_conflicts

    try:
        conflict = get_dependency_conflicts(list(instrumentor.instrumentation_dependencies()))
    except Exception:  # noqa: BLE001 - a third-party instrumentor may raise anything
        return ""
    return str(conflict) if conflict else ""


_INSTRUMENTATION = Instrumentation()


def get() -> Instrumentation:
    return _INSTRUMENTATION


def activate(**providers: Any) -> Instrumentation:
    _INSTRUMENTATION.activate(**providers)
    return _INSTRUMENTATION


def deactivate() -> None:
    _INSTRUMENTATION.deactivate()


def status() -> list[dict[str, str]]:
    return _INSTRUMENTATION.status()


def ensure(name: str) -> None:
    _INSTRUMENTATION.ensure(name)
