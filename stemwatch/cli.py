"""The ``stemwatch`` command line.

Each package contributes its sub-commands through a ``register(subparsers)`` function in a light
module (``streamer/cli.py``, ``engine/sim/cli.py``, ...). Those modules must not import heavy
libraries at import time: handlers import what they need when they run, so ``stemwatch --help``
stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

#: Modules that contribute sub-commands, in the order they appear in ``--help``.
COMMAND_MODULES = (
    "streamer.cli",
    "engine.sim.cli",
    "engine.infer.cli",
    "engine.cli",
    "dashboard.serve",
    "dashboard.gallery_cli",
    "stemwatch.config_cli",
    "lab.cli",
    "dashboard.cli",
    "stemwatch.bench",
)


def build_parser() -> argparse.ArgumentParser:
    from stemwatch import __version__

    parser = argparse.ArgumentParser(
        prog="stemwatch",
        description="Live analyzer for atomically resolved STEM movies of Si-doped graphene: "
        "ZeroMQ frames -> network -> atoms -> lattice graph -> tracks -> events -> dashboard.",
    )
    parser.add_argument("--version", action="version", version=f"stemwatch {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a package not written yet must not break the CLI
            if exc.name and name.startswith(exc.name):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SystemExit as exc:             # a handler that already said why (one line) and chose the status
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from stemwatch.errors import EXIT_USAGE, user_error_message

        msg = user_error_message(exc)
        if msg is None:
            raise
        print(f"stemwatch {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
