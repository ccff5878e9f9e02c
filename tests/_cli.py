"""``stemwatch ARGS`` run in the test's own process, for tests about a command's behaviour (its exit
status, its one-line errors, its files) rather than about the process itself (signals, a fresh
interpreter's imports, the ``python -m stemwatch`` entry point: tests/test_cli.py and the
Ctrl-C/SIGTERM tests keep real processes).

A new ``python -m stemwatch`` pays 1-2 s of imports (numpy, scipy, onnxruntime, ...) that the test
process has already paid. :func:`stemwatch_in_process` gives what ``subprocess.run(...,
capture_output=True, text=True)`` gives: the exit status, stdout and stderr, where stderr also holds
what the command logs at WARNING and above (what ``main``'s ``logging.basicConfig`` prints in a
process of its own; under pytest the root logger already has handlers, so that call does nothing)
and the traceback, with status 1, of an exception ``main`` lets through (what the interpreter would
print).
"""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
import traceback


def stemwatch_in_process(*argv) -> subprocess.CompletedProcess:
    """Run ``stemwatch.cli.main(argv)`` (each argument made a ``str``) and capture what a process would
    have printed."""
    from stemwatch.cli import main

    args = [str(a) for a in argv]
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    n_verbose = sum(a.count("v") for a in args if a.startswith("-v") and set(a[1:]) == {"v"}) + args.count("--verbose")
    handler.setLevel([logging.WARNING, logging.INFO, logging.DEBUG][min(n_verbose, 2)])
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    if old_level:                               # (NOTSET lets every record through already)
        root.setLevel(min(old_level, handler.level))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(args)
            except SystemExit as exc:           # argparse's usage errors (before main's own handling)
                rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception:                   # what the interpreter prints for an uncaught exception
                traceback.print_exc(file=err)
                rc = 1
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    return subprocess.CompletedProcess(["stemwatch", *args], rc, out.getvalue(), err.getvalue())
