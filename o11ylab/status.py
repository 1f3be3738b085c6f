"""``%o11y status``: where telemetry goes and what happened to it, as text and as HTML;
``%o11y open``: the run folder as a link JupyterLab's file browser opens."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

__all__ = [
    "RUNS_LINK",
    "RunFolderLink",
    "StatusView",
    "capture_words",
    "export_words",
    "jupyter_server_for",
    "open_run",
]

# OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT's values, in words a user acts on.
_CAPTURE = {
    "NO_CONTENT": (
        "off: prompts and answers are not recorded "
        "(set OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=SPAN_ONLY to record them)"
    ),
    "SPAN_ONLY": "on: prompts and answers are recorded on the spans",
    "EVENT_ONLY": "on: prompts and answers are recorded as log events",
    "SPAN_AND_EVENT": "on: prompts and answers are recorded on the spans and as log events",
}


def capture_words(mode: str) -> str:
    """The content-capture mode in plain words (an unknown value is shown as it is)."""
    return _CAPTURE.get(str(mode).upper(), str(mode))


def export_words(exporter: dict[str, Any]) -> str:
    """One exporter's counts; before its first export it says so rather than "0 exported"."""
    exported, failed, target = exporter["exported"], exporter["failed"], exporter["target"]
    dropped = exporter.get("dropped", 0)
    if not exported and not failed and not dropped:
        when = (
            "at the next export interval"
            if "metric" in str(exporter["name"])
            else "when the next batch leaves"
        )
        return f"nothing exported yet ({when}, or now with %o11y flush) → {target}"
    lost = f"{failed} failed" + (f" ({dropped} dropped: queue full)" if dropped else "")
    return f"{exported} exported, {lost} → {target}"


class StatusView:
    def __init__(self, status: dict[str, Any], autotrace: bool) -> None:
        self.status = status
        self.autotrace = autotrace

    def _lines(self) -> list[tuple[str, str]]:
        s = self.status
        rows = [
            ("service", str(s["service"])),
            ("run folder", s["run_dir"] or "off (O11YLAB_TRACE_FILE=0)"),
            (
                "OTLP",
                ", ".join(f"{k} → {v}" for k, v in s["otlp"].items())
                or "off (set OTEL_EXPORTER_OTLP_ENDPOINT)",
            ),
            ("/metrics", s["prometheus"] or "off"),
            ("autotrace", "on" if self.autotrace else "off"),
            ("content capture", capture_words(s["content_capture"])),
            ("queued", str(s["queued"])),
            ("spans in memory", str(s["buffered_spans"])),
        ]
        for exporter in s["exporters"]:
            rows.append((exporter["name"], export_words(exporter)))
        for row in s.get("instrumentation", ()):
            state = row["state"]
            detail = f"{row['library']} {row['library_version']}".strip()
            text = f"{state}: {detail} by {row['instrumentor']}"
            if row["reason"] and state not in ("instrumented", "waiting"):
                text += f" ({row['reason']})"
            elif state == "waiting":
                text = f"waiting for `import {row['library']}` ({row['instrumentor']})"
            rows.append((f"traced: {row['name']}", text))
        if s.get("openai_default"):
            rows.append(("openai SDK", s["openai_default"]))
        if s.get("prices"):
            rows.append(("prices", s["prices"]))
        if s.get("hardware"):
            rows.append(("hardware", s["hardware"]))
        rows.extend(("note", note) for note in s["notes"])
        return rows

    def __repr__(self) -> str:
        rows = self._lines()
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)

    def _repr_html_(self) -> str:
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
            f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
            for k, v in self._lines()
        )
        return f"<table class='o11ylab-status'>{body}</table>"


# --- %o11y open -----------------------------------------------------------------------------

# The link %o11y open makes in the working folder when the run folders live outside it: run
# folders stay in one place for every project (~/.o11ylab/runs), out of the user's git
# checkouts (with content capture on they hold prompts), and are reached through this link
# only where the user asked for it.
RUNS_LINK = "o11ylab-runs"


class RunFolderLink:
    """The run folder: its path relative to the kernel's working folder (``href``), the
    JupyterLab address that opens it in the file browser (``url``, when the kernel's Jupyter
    server is found), and what was done to make it reachable."""

    def __init__(
        self, folder: Path | None, href: str | None, note: str, url: str | None = None
    ) -> None:
        self.folder = folder
        self.href = href
        self.note = note
        self.url = url

    def __repr__(self) -> str:
        where = f"o11ylab: run folder {self.folder}" if self.folder else "o11ylab: no run folder"
        shown = f" (in the file browser: {self.href}/)" if self.href else ""
        return where + shown + (f"\n{self.note}" if self.note else "")

    def _repr_html_(self) -> str:
        if self.folder is None:
            return f"<div class='o11ylab-open'>{html.escape(repr(self))}</div>"
        shown = html.escape(f"{self.href}/" if self.href else str(self.folder))
        if self.url is None:
            link = f"<code>{shown}</code>"
        else:
            # JupyterLab opens a relative link as a document, and a folder is none: the
            # /lab/tree address opens the file browser there (in a new tab, as JupyterLab
            # opens every link that is not a file of the notebook's).
            link = (
                f"<a href='{html.escape(self.url, quote=True)}' "
                f"title='{html.escape(str(self.folder), quote=True)}'>{shown}</a>"
            )
        note = f"<br>{html.escape(self.note)}" if self.note else ""
        return f"<div class='o11ylab-open'>o11ylab: run folder {link}{note}</div>"


def jupyter_server_for(folder: Path) -> tuple[str, Path] | None:
    """(base URL, root folder) of the running Jupyter server whose root holds ``folder``: the
    kernel's own server (its parent process) first. None outside Jupyter (a terminal IPython,
    an editor's kernel)."""
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:
        return None
    here = folder.resolve()
    found: list[tuple[bool, str, Path]] = []
    try:
        for info in list_running_servers():
            root = Path(str(info.get("root_dir") or "")).expanduser().resolve()
            if str(info.get("root_dir")) and here.is_relative_to(root):
                mine = info.get("pid") == os.getppid()
                found.append((mine, str(info.get("base_url") or "/"), root))
    except Exception:  # noqa: BLE001 - unreadable server files: no address, the path is shown
        return None
    found.sort(key=lambda item: not item[0])
    return (found[0][1], found[0][2]) if found else None


def open_run(
    run_dir: Path | None, runs_dir: Path, cwd: Path, server: tuple[str, Path] | None = None
) -> RunFolderLink:
    """``%o11y open``: ``run_dir`` reached from ``cwd``, making the ``o11ylab-runs`` link there
    when it is outside (this explicit request is the only thing that makes it). ``server``:
    the Jupyter server's base URL and root, for the address that opens the folder."""
    link = _open_run(run_dir, runs_dir, cwd)
    if link.href is not None and server is not None:
        from urllib.parse import quote

        base_url, root = server
        here = cwd.resolve()
        if here.is_relative_to(root):
            api_path = (here.relative_to(root) / link.href).as_posix()
            link.url = f"{base_url.rstrip('/')}/lab/tree/{quote(api_path)}"
    return link


def _open_run(run_dir: Path | None, runs_dir: Path, cwd: Path) -> RunFolderLink:
    if run_dir is None:
        return RunFolderLink(
            None, None, "The run files are off (O11YLAB_TRACE_FILE=0): nothing to open."
        )
    run = run_dir.expanduser().resolve()
    here = cwd.resolve()
    if run.is_relative_to(here):
        return RunFolderLink(run, run.relative_to(here).as_posix() or ".", "")
    runs = runs_dir.expanduser().resolve()
    # A run under O11YLAB_RUNS_DIR is reached through a link to all the runs (one link per
    # working folder, whichever run); one elsewhere (o11ylab run --out) through its own.
    target, name = (runs, RUNS_LINK) if run.is_relative_to(runs) else (run, "o11ylab-run")
    link = here / name
    href = (Path(name) / run.relative_to(target)).as_posix()
    if link.is_symlink() and link.resolve() == target:
        return RunFolderLink(run, href, f"Through the link {name} → {target} in {here}.")
    if link.exists() or link.is_symlink():
        return RunFolderLink(
            run,
            None,
            f"{link} exists and is not a link to {target}: o11ylab leaves it alone. Move it "
            "away and run %o11y open again, or open the folder above yourself.",
        )
    try:
        os.symlink(target, link, target_is_directory=True)
    except OSError as exc:
        return RunFolderLink(
            run, None, f"Could not make the link {link} ({exc.strerror or exc}): open it yourself."
        )
    return RunFolderLink(
        run,
        href,
        f"Made the link {name} → {target} in {here}, as %o11y open does when the run folders "
        "are outside the working folder; delete it whenever you like (the runs stay).",
    )
