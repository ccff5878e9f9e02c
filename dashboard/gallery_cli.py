"""``stemwatch analyze --gallery``: before/after PNGs of every transformation event.

The offline analysis (``engine.cli``) knows nothing of drawing; the gallery is the dashboard's
picture (:mod:`dashboard.gallery`), so this module adds the option to the ``analyze`` command and
hands the analysis a per-result hook (the same layering as ``serve``: the dashboard composes the
engine with the screen, never the other way round).
"""

from __future__ import annotations


def _hooks(args) -> dict:
    """Extra keyword arguments of :func:`engine.analyze.analyze_file` for ``--gallery``."""
    if not getattr(args, "gallery", False):
        return {}
    from dashboard.gallery import GalleryWriter

    gal = GalleryWriter(args.out)          # ImportError (one line, exit 2) without Pillow
    args.gallery_writer = gal
    return {"on_result": (gal.write,), "keep_image": True, "summary_extra": lambda: {"gallery": len(gal.written)}}


def register(sub) -> None:
    p = sub.choices.get("analyze")
    if p is None:                           # the engine's commands are not installed
        return
    p.add_argument("--gallery", action="store_true",
                   help="also write gallery/f<frame>_<kind>_t<track>.png: crops from the frame before and the frame "
                        "after each transformation event, atoms and bonds drawn (needs Pillow: stemwatch[gallery])")
    analyze = p.get_default("func")

    def func(args) -> int:
        rc = analyze(args)
        gal = getattr(args, "gallery_writer", None)
        if gal is not None:
            print(f"wrote {args.out}/gallery/ ({len(gal.written)} PNG)")
        return rc

    p.set_defaults(analyze_hooks=_hooks, func=func)
