"""``stemwatch config --show``: the effective configuration as JSON (defaults, then ``--config FILE``,
then each ``--set SECTION.FIELD=VALUE``), validated as the analyzer would use it.

Light module: only the standard library and :mod:`stemwatch.config`.
"""

from __future__ import annotations

import argparse
import json
import sys


def _parse_set(text: str) -> tuple[str, str, object]:
    from stemwatch.config import ConfigError

    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise ConfigError(f"--set {text!r}: expected SECTION.FIELD=VALUE, e.g. tracking.memory_frames=4")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw                       # a bare word is a string: inference.backend=onnx
    return section, name, value


def effective_config(config_file: str | None = None, sets: list[str] = ()):
    """The configuration ``stemwatch config --show`` prints (raises ConfigError on bad input)."""
    from stemwatch.config import load_config

    cfg = load_config(config_file)
    for text in sets:
        section, name, value = _parse_set(text)
        cfg = cfg.replace(**{section: {name: value}})
    return cfg


def _cmd(args: argparse.Namespace) -> int:
    from stemwatch.config import ConfigError

    try:
        cfg = effective_config(args.config, args.set or [])
    except ConfigError as exc:
        print(f"stemwatch config: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(cfg.to_dict(), indent=2))
    return 0


def register(sub) -> None:
    p = sub.add_parser("config", help="print the effective configuration as JSON (stemwatch/config.py)",
                       description="Print the configuration the analyzer would use: the defaults of "
                                   "stemwatch/config.py, then the overrides of --config FILE (the same file "
                                   "`analyze` and `serve` take), then each --set; every value is checked "
                                   "(type, range, unit) as when the analyzer starts. Exit status 2 on a bad value.")
    p.add_argument("--show", action="store_true", help="print the configuration (the default action)")
    p.add_argument("--config", metavar="JSON", default=None, help="JSON file of overrides by section")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="override one field; VALUE is JSON (4, 0.5, [3, 4], true) or a bare string (repeatable)")
    p.set_defaults(func=_cmd)
