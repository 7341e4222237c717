"""TrueType fonts available for rendering text: matplotlib's bundled fonts and system fonts."""

from __future__ import annotations

import functools
import glob
import os

from PIL import ImageFont

SYSTEM_FONT_GLOB = "/usr/share/fonts/truetype/**/*.ttf"
# Symbol, math and placeholder fonts whose ASCII code points are not plain letters and digits.
EXCLUDED = ("Sym", "NonUni", "LastResort", "Display", "Math", "cmex", "cmsy", "cmmi", "ExtraLight")
PROBE = "abcdefghijklmnopqrstuvwxyz0123456789"


def _candidate_paths() -> list[str]:
    paths: list[str] = []
    try:
        import matplotlib

        paths += sorted(
            glob.glob(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "*.ttf"))
        )
    except ImportError:
        pass
    paths += sorted(glob.glob(SYSTEM_FONT_GLOB, recursive=True))
    return paths


def _renders_text(path: str) -> bool:
    """True when every probe character has its own non-empty glyph."""
    try:
        font = ImageFont.truetype(path, 24)
    except OSError:
        return False
    masks = set()
    for char in PROBE:
        mask = font.getmask(char)
        if mask.size[0] == 0 or mask.size[1] == 0:
            return False
        masks.add((mask.size, bytes(mask)))
    return len(masks) == len(PROBE)


@functools.cache
def available_fonts() -> tuple[str, ...]:
    """Paths of usable text fonts, deduplicated by file name, in a stable order (cached)."""
    seen: set[str] = set()
    fonts: list[str] = []
    for path in _candidate_paths():
        name = os.path.basename(path)
        if name in seen or any(x in name for x in EXCLUDED) or not _renders_text(path):
            continue
        seen.add(name)
        fonts.append(path)
    if not fonts:
        raise RuntimeError("no usable TrueType font found (install matplotlib or fonts-dejavu)")
    return tuple(fonts)


@functools.lru_cache(maxsize=4096)
def load_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    """A cached FreeType font at a pixel size."""
    return ImageFont.truetype(path, size)


@functools.lru_cache(maxsize=65536)
def has_glyph(path: str, char: str) -> bool:
    """True when the font draws ``char`` with its own glyph (not the missing-glyph box)."""
    if char.isspace():
        return True
    font = load_font(path, 24)
    mask = font.getmask(char)
    if mask.size[0] == 0 or mask.size[1] == 0:
        return False
    missing = font.getmask("\uffff")
    return (mask.size, bytes(mask)) != (missing.size, bytes(missing))


def fonts_for(text: str) -> tuple[str, ...]:
    """The available fonts that have a glyph for every character of ``text``."""
    return tuple(p for p in available_fonts() if all(has_glyph(p, c) for c in set(text)))
