"""The ``o11ylab`` command: ``run`` (notebooks headless, one trace), ``serve``, ``models``.

Each sub-command lives in its own module, which provides ``add_arguments(parser)`` and
``run_command(args) -> int``; this file only wires them up and imports them lazily.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "run": (
        "o11ylab.runner",
        "Run notebooks headless with papermill, all in one trace (sweeps with --grid; in "
        "parallel or on a cluster with --workers / --scheduler).",
    ),
    "serve": ("o11ylab.serve", "Serve local models over the OpenAI API on 127.0.0.1."),
    "models": ("o11ylab.models", "Prepare and list the local models (offline)."),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="o11ylab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # only the module that runs is imported
            importlib.import_module(module_name).add_arguments(sub_parser)
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.run_command(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
