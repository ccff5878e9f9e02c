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
import os
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


def one_blas_thread(environ=None, modules=None) -> bool:
    """Give NumPy's and SciPy's OpenBLAS one thread in this process and the processes it starts (the
    network's worker, a Dask cluster's), unless the user set ``OPENBLAS_NUM_THREADS``. Read once, when
    the library loads, so only before the first ``import numpy``; returns whether it was set.

    The analyzer is already parallel by process (network, atoms, dashboard), and its matrix products are
    small: with OpenBLAS's default of one thread per core, a (97 x 256) @ (256 x 256) product of the
    material check's fine test took 16 ms instead of 0.09 ms on the 2 cores busy with the rest of the
    pipeline (the threads wait for each other's time slices); the fine test 68 -> 6.4 ms, and a graphene
    series that turns to MoS2 1.6 instead of 3.1 ms a frame (docs/material.md). Same numbers either way."""
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if "numpy" in modules or "OPENBLAS_NUM_THREADS" in environ:
        return False
    environ["OPENBLAS_NUM_THREADS"] = "1"
    return True


def main(argv: list[str] | None = None) -> int:
    one_blas_thread()
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
