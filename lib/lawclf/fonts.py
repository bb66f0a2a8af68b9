"""Find a font that really has Chinese glyphs, for matplotlib plots and word clouds.

Without one, matplotlib and wordcloud silently draw empty boxes (豆腐块) instead of
characters. Every plot in the series goes through :func:`find_cjk_font` /
:func:`setup_matplotlib`, which either return a font that has been checked to
contain 法 and 律, or raise :class:`FontNotFoundError` saying how to get one.

Search order: explicit path → ``FONT_PATH`` environment variable → well-known
system locations (Debian/Ubuntu, Colab, macOS, Windows) → matplotlib's font list
filtered by family names known to cover CJK.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

#: Characters every accepted font must contain (the project's own subject: 法律).
PROBE_CHARS = "法律咨询"

#: Well-known CJK font files, most common first.
CANDIDATE_PATHS: tuple[str, ...] = (
    # Debian / Ubuntu (apt-get install fonts-wqy-microhei / fonts-wqy-zenhei / fonts-noto-cjk)
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # Colab after apt-get install fonts-noto-cjk
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",  # Fedora / Arch
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/source-han-sans/SourceHanSans-Regular.ttc",
    "/usr/share/fonts/adobe-source-han-sans/SourceHanSansCN-Regular.otf",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    # macOS
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/STHeiti Medium.ttc",
    "/System/Library/Fonts/STHeiti Light.ttc",
    "/System/Library/Fonts/Hiragino Sans GB.ttc",
    "/Library/Fonts/Arial Unicode.ttf",
    "/System/Library/Fonts/Supplemental/Songti.ttc",
    # Windows
    "C:/Windows/Fonts/msyh.ttc",
    "C:/Windows/Fonts/msyh.ttf",
    "C:/Windows/Fonts/simhei.ttf",
    "C:/Windows/Fonts/simsun.ttc",
)

#: Substrings of family names that indicate CJK coverage (for matplotlib's font list).
CJK_FAMILY_HINTS: tuple[str, ...] = (
    "wenquanyi", "wqy", "noto sans cjk", "noto serif cjk", "noto sans sc", "noto serif sc",
    "source han", "simhei", "simsun", "microsoft yahei", "pingfang", "heiti", "songti",
    "hiragino sans gb", "ar pl", "droid sans fallback", "arial unicode",
)

HOW_TO_GET_ONE = (
    "Chinese text needs a font with CJK glyphs (otherwise it is drawn as empty boxes). "
    "Get one and run again:\n"
    "  - Debian/Ubuntu:  sudo apt-get install fonts-wqy-microhei\n"
    "  - Google Colab:   !apt-get -qq install fonts-wqy-microhei (what the notebooks' install cell does)\n"
    "  - or point at any .ttf/.otf/.ttc with Chinese glyphs: set FONT_PATH=/path/to/font "
    "(or the FONT_PATH notebook parameter / --font-path flag)."
)


class FontNotFoundError(FileNotFoundError):
    """No usable CJK font; the message says how to install one."""


@lru_cache(maxsize=64)
def _missing_glyphs(path: str, chars: str) -> str:
    """Characters of ``chars`` the font at ``path`` has no glyph for (all of them if unreadable)."""
    from fontTools.ttLib import TTFont, TTLibError

    try:
        # fontNumber=0: the first face of a .ttc collection (all faces share the CJK cmap).
        with TTFont(path, fontNumber=0, lazy=True) as font:
            cmap = font.getBestCmap() or {}
    except (TTLibError, OSError, AssertionError, KeyError, ValueError):
        return chars
    return "".join(ch for ch in chars if ord(ch) not in cmap)


def has_cjk_glyphs(path: str | os.PathLike[str], chars: str = PROBE_CHARS) -> bool:
    """True when the font file exists, can be read, and maps every character of ``chars``."""
    p = Path(path)
    return p.is_file() and not _missing_glyphs(str(p.resolve()), chars)


def _check_explicit(path: str, origin: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FontNotFoundError(f"{origin}: font file {p} does not exist.\n\n{HOW_TO_GET_ONE}")
    missing = _missing_glyphs(str(p.resolve()), PROBE_CHARS)
    if missing:
        raise FontNotFoundError(
            f"{origin}: font {p} cannot be used: it has no glyphs for {missing!r} "
            f"(not a CJK font, or not a readable font file).\n\n{HOW_TO_GET_ONE}")
    return p


def _matplotlib_candidates() -> list[str]:
    from matplotlib import font_manager

    return [f.fname for f in font_manager.fontManager.ttflist
            if any(hint in f.name.lower() for hint in CJK_FAMILY_HINTS)]


def find_cjk_font(font_path: str = "") -> Path:
    """Path of a font with Chinese glyphs, or raise :class:`FontNotFoundError`.

    An explicit ``font_path`` (or the ``FONT_PATH`` environment variable) must work:
    a missing or non-CJK file is an error rather than a silent fallback, so the user
    learns that their setting is wrong.
    """
    if font_path:
        return _check_explicit(str(font_path), "font_path")
    env = os.environ.get("FONT_PATH", "")
    if env:
        return _check_explicit(env, "FONT_PATH environment variable")
    for candidate in (*CANDIDATE_PATHS, *_matplotlib_candidates()):
        if has_cjk_glyphs(candidate):
            return Path(candidate)
    raise FontNotFoundError(f"No font with Chinese glyphs was found on this machine.\n\n{HOW_TO_GET_ONE}")


def setup_matplotlib(font_path: str = "") -> Path:
    """Make matplotlib draw Chinese: register the CJK font and put it first. Returns the font path."""
    import matplotlib
    from matplotlib import font_manager

    path = find_cjk_font(font_path)
    font_manager.fontManager.addfont(str(path))
    name = font_manager.FontProperties(fname=str(path)).get_name()
    sans = [f for f in matplotlib.rcParams["font.sans-serif"] if f != name]
    matplotlib.rcParams["font.sans-serif"] = [name, *sans]
    matplotlib.rcParams["font.family"] = "sans-serif"
    # The CJK fonts lack U+2212 (the minus sign matplotlib uses); use an ASCII hyphen.
    matplotlib.rcParams["axes.unicode_minus"] = False
    return path


__all__ = ["FontNotFoundError", "find_cjk_font", "setup_matplotlib", "has_cjk_glyphs", "PROBE_CHARS",
           "CANDIDATE_PATHS", "HOW_TO_GET_ONE"]


def chinese_labels(font_path: str = "") -> bool:
    """Set matplotlib up for Chinese text when a CJK font is found and say so: plots then label in
    Chinese, else (no font) in English, so a plot never shows empty boxes instead of characters."""
    try:
        setup_matplotlib(font_path)
        return True
    except Exception:  # FontNotFoundError, or matplotlib's own font errors
        return False
