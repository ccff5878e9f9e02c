"""How the configuration protects itself: every section is validated and frozen when it is built.

:class:`Section` is the base of the sections of :class:`stemwatch.config.Config`. Its
``__post_init__`` goes through the fields by their annotations:

* types are coerced as JSON gives them: an integral number for an ``int`` field (``4`` or ``4.0``,
  never ``"4"`` or ``True``), any number for a ``float`` field (finite), a list for a ``tuple``
  field; a mapping field becomes a read-only :class:`types.MappingProxyType` over a private copy;
* ``Literal`` fields accept only their options; ``X | None`` accepts None;
* ranges: :data:`RULES` (per field), else numbers whose name carries a unit (``_A``, ``_s``,
  ``_px``, ``_frames``, ``_bytes``) must not be negative; then the section's cross-field checks.

A bad value raises :class:`ConfigError` (a ``ValueError`` and a ``TypeError``) whose message names
the field and its unit, e.g. ``tracking.memory_frames: expected an integer (frames), got '3' (str)``.
Fields another change adds keep working unchecked beyond their annotation until a rule is added here.
"""

from __future__ import annotations

import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import fields

#: unit of a field, from the end of its name (longest first)
UNITS = (("_A_per_frame", "A/frame"), ("_A2", "A^2"), ("_A", "A"), ("_s", "s"), ("_px", "px"),
         ("_frames", "frames"), ("_bytes", "bytes"))


class ConfigError(ValueError, TypeError):
    """A configuration value that cannot be used (the message names the field and its unit)."""


def unit_of(name: str, rule: dict | None = None) -> str:
    if rule and "unit" in rule:
        return rule["unit"]
    for suffix, unit in UNITS:
        if name.endswith(suffix):
            return unit
    return ""


def _ge(lo, unit=None):
    return {"min": lo, **({"unit": unit} if unit is not None else {})}


def _gt(lo, unit=None):
    return {"min": lo, "open_min": True, **({"unit": unit} if unit is not None else {})}


def _in(lo, hi, unit=None, open_min=False):
    return {"min": lo, "max": hi, "open_min": open_min, **({"unit": unit} if unit is not None else {})}


#: ranges by "section.field" (mapping fields: the rule applies to every value)
RULES: dict[str, dict] = {
    "stream.max_frame_bytes": _gt(0), "stream.max_frame_side_px": _gt(0),
    "stream.rcvhwm": _ge(0, "messages"), "stream.recorder_queue_frames": _ge(1, "frames"),
    "stream.stall_timeout_s": _ge(0), "stream.poll_interval_s": _gt(0), "stream.recorder_queue_bytes": _gt(0),
    "stream.max_gaps_kept": _ge(0, "gaps"), "stream.recorder_max_buffer_bytes": _gt(0, "bytes"),
    "inference.tile_px": _ge(16), "inference.tile_overlap_px": _ge(0), "inference.threads": _ge(1, "threads"),
    "chemistry.prob_threshold": _in(0.0, 1.0, "probability", open_min=True),
    "chemistry.min_atom_separation_A": _gt(0), "chemistry.bond_cutoff_A": {**_gt(0), "item": float},
    "chemistry.max_coordination": {**_ge(0, "bonds"), "item": int}, "chemistry.si_c_shell_A": {**_gt(0), "item": float}, "chemistry.motif_radius_bonds": _ge(1, "bonds"),
    "chemistry.site_radius_A": _gt(0), "chemistry.refine_window_A": _gt(0),
    "chemistry.other_intensity_ratio": _gt(0, "x the Si level"),
    "chemistry.min_si_relative_intensity": _ge(0, "x the 75th-percentile Si"),
    "chemistry.min_intensity_ratio": _ge(0, "x the median C contrast"),
    "chemistry.vacuum_min_dip": _ge(0, "x the lattice contrast"), "chemistry.vacuum_own_sigma": _ge(0, "noise sigma"),
    "chemistry.vacuum_dark_sigma": _ge(0, "noise sigma"),
    "chemistry.material_recheck_every_n_frames": _ge(1, "frames"),
    "chemistry.overlayer_excess": _ge(0, "C contrasts"), "chemistry.overlayer_min_atoms": _ge(0, "atoms"),
    "tracking.max_speed_A_per_frame": _gt(0), "tracking.max_drift_A_per_frame": _ge(0),
    "tracking.memory_frames": _ge(0), "tracking.confirm_frames": _ge(1),
    "tracking.process_noise_A": _gt(0), "tracking.measurement_noise_A": _gt(0),
    "tracking.hop_cost": _ge(0, "x (birth + death)"), "tracking.pivot_hop_cost": _ge(0, "x (birth + death)"),
    "tracking.heavy_mismatch_cost": _ge(0, "x (birth + death)"),
    "tracking.species_mismatch_cost": _ge(0, "x (birth + death)"),
    "tracking.tentative_cost": _ge(0, "x (birth + death)"), "tracking.history_frames": _ge(1),
    "tracking.rejoin_min_confidence": _in(0.0, 1.0, "confidence"),
    "events.min_confidence": _in(0.0, 1.0, "confidence"), "events.k_of_n": {**_ge(1, "frames"), "item": int},
    "dashboard.port": _in(0, 65535, "TCP port"), "dashboard.allow_origins": {"item": str}, "dashboard.history_frames": _ge(1),
    "dashboard.max_update_bytes": _gt(0), "dashboard.max_events": _ge(1, "events"),
    "dashboard.max_event_frames": _ge(0, "frames"), "dashboard.display_period_s": _gt(0),
    "dashboard.status_period_s": _gt(0), "dashboard.ack_timeout_s": _ge(0),
}

#: "section" name of each section class (filled by stemwatch.config from Config's fields)
SECTION_NAMES: dict[type, str] = {}


def _fail(where: str, unit: str, what: str, value) -> ConfigError:
    u = f" ({unit})" if unit else ""
    return ConfigError(f"{where}: expected {what}{u}, got {value!r} ({type(value).__name__})")


def _number(where: str, unit: str, value, integer: bool):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(where, unit, "an integer" if integer else "a number", value)
    if not math.isfinite(value):
        raise _fail(where, unit, "a finite number", value)
    if integer:
        if isinstance(value, float) and not value.is_integer():
            raise _fail(where, unit, "an integer", value)
        return int(value)
    return float(value)


def _check_range(where: str, unit: str, value, rule: dict | None, default_non_negative: bool) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    lo = rule.get("min") if rule else (0 if default_non_negative else None)
    hi = rule.get("max") if rule else None
    u = f" ({unit})" if unit else ""
    if lo is not None and (value <= lo if rule and rule.get("open_min") else value < lo):
        op = ">" if rule and rule.get("open_min") else ">="
        raise ConfigError(f"{where} must be {op} {lo}{u}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{where} must be <= {hi}{u}, got {value!r}")


def coerce(where: str, hint, value, unit: str = "", rule: dict | None = None, ranged: bool = False):
    """``value`` checked against the annotation ``hint`` (and ``rule``), coerced to its frozen form."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        return coerce(where, rest[0] if len(rest) == 1 else typing.Any, value, unit, rule, ranged)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise _fail(where, unit, "true or false", value)
        return value
    if hint in (int, float):
        v = _number(where, unit, value, hint is int)
        _check_range(where, unit, v, rule, ranged)
        return v
    if hint is str:
        if not isinstance(value, str):
            raise _fail(where, unit, "a string", value)
        return value
    if hint is dict or origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _fail(where, unit, "a mapping", value)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _fail(f"{where} key", "", "a string", k)
            out[k] = _item(f"{where}[{k!r}]", v, unit, rule, ranged)
        return types.MappingProxyType(out)
    if hint is tuple or origin is tuple:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
            raise _fail(where, unit, "a list", value)
        return tuple(_item(f"{where}[{i}]", v, unit, rule, ranged) for i, v in enumerate(value))
    if isinstance(value, list):          # an unannotated sequence still must not be mutable
        return tuple(value)
    return value


def _item(where: str, value, unit: str, rule: dict | None, ranged: bool):
    """One value of a mapping or tuple field: of the rule's ``item`` type when it has one."""
    item = (rule or {}).get("item")
    if item is not None:
        return coerce(where, item, value, unit, rule, ranged)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = _number(where, unit, value, isinstance(value, int))
        _check_range(where, unit, v, rule, ranged)
        return v
    return value


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


class Section:
    """Base of the configuration sections: validated and frozen at construction (module docstring)."""

    def __post_init__(self) -> None:
        section = SECTION_NAMES.get(type(self), type(self).__name__)
        hints = _hints(type(self))
        for f in fields(self):
            where = f"{section}.{f.name}"
            rule = RULES.get(where)
            unit = unit_of(f.name, rule)
            value = coerce(where, hints.get(f.name, typing.Any), getattr(self, f.name), unit, rule,
                           ranged=bool(unit) and unit_of(f.name) != "")
            object.__setattr__(self, f.name, value)
        check = CROSS_CHECKS.get(section)
        if check is not None:
            check(self)

    def to_dict(self) -> dict:
        """A JSON-serialisable copy (mappings as dicts, tuples kept)."""
        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}

    def __reduce__(self):                # pickle / deepcopy (a mappingproxy cannot be pickled)
        return (_rebuild, (type(self), self.to_dict()))


def choices(section_cls, name: str) -> tuple:
    """The options of a ``Literal`` field, e.g. ``choices(InferenceConfig, "backend")`` (for CLI choices)."""
    return typing.get_args(typing.get_type_hints(section_cls)[name])


def _rebuild(cls, values: dict):
    return cls(**values)


def plain(value):
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    return value


def _inference(s) -> None:
    if s.tile_overlap_px * 2 >= s.tile_px:
        raise ConfigError(f"inference.tile_overlap_px must be < tile_px / 2 (px), got {s.tile_overlap_px} "
                          f"with tile_px {s.tile_px}")


def _chemistry(s) -> None:
    shell = s.si_c_shell_A
    if shell and (len(shell) != 2 or not 0 < shell[0] <= shell[1]):
        raise ConfigError(f"chemistry.si_c_shell_A: expected () or (low, high) with 0 < low <= high (A), got {shell!r}")
    for key in s.bond_cutoff_A:
        if len(key.split("-")) != 2:
            raise ConfigError(f"chemistry.bond_cutoff_A: keys are species pairs like 'Si-C', got {key!r}")
    for k, v in s.max_coordination.items():
        if not isinstance(v, int):
            raise ConfigError(f"chemistry.max_coordination[{k!r}]: expected an integer (bonds), got {v!r}")


def _events(s) -> None:
    kn = s.k_of_n
    if len(kn) != 2 or not all(isinstance(v, int) for v in kn) or not 1 <= kn[0] <= kn[1]:
        raise ConfigError(f"events.k_of_n: expected two integers K N with 1 <= K <= N (frames), got {kn!r}")


CROSS_CHECKS = {"inference": _inference, "chemistry": _chemistry, "events": _events}
