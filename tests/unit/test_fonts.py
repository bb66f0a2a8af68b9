"""CJK font discovery: explicit path, FONT_PATH, system search, and rejection of non-CJK fonts."""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib
import pytest

from lawclf import fonts
from lawclf.fonts import (
    FontNotFoundError,
    find_cjk_font,
    has_cjk_glyphs,
    setup_matplotlib,
)

#: A font without Chinese glyphs that every matplotlib install ships.
DEJAVU = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def test_dejavu_has_no_cjk_glyphs_but_latin():
    assert not has_cjk_glyphs(DEJAVU)
    assert has_cjk_glyphs(DEJAVU, chars="law")


def test_explicit_missing_path_names_the_file_and_how_to_fix(tmp_path):
    bad = tmp_path / "nope.ttf"
    with pytest.raises(FontNotFoundError) as err:
        find_cjk_font(str(bad))
    msg = str(err.value)
    assert str(bad) in msg and "does not exist" in msg
    assert "fonts-wqy-microhei" in msg and "noto" not in msg and "FONT_PATH" in msg  # one instruction everywhere


def test_explicit_font_without_cjk_glyphs_is_rejected():
    with pytest.raises(FontNotFoundError, match="no glyphs for"):
        find_cjk_font(str(DEJAVU))


def test_a_non_font_file_is_rejected(tmp_path):
    junk = tmp_path / "junk.ttf"
    junk.write_bytes(b"not a font at all")
    with pytest.raises(FontNotFoundError, match="junk.ttf"):
        find_cjk_font(str(junk))


def test_explicit_path_wins(cjk_font, tmp_path, monkeypatch):
    monkeypatch.setenv("FONT_PATH", str(DEJAVU))  # would fail if it were consulted
    copy = tmp_path / ("copy" + cjk_font.suffix)
    shutil.copy(cjk_font, copy)
    assert find_cjk_font(str(copy)) == copy


def test_env_var_is_used_and_checked(cjk_font, tmp_path, monkeypatch):
    copy = tmp_path / ("env" + cjk_font.suffix)
    shutil.copy(cjk_font, copy)
    monkeypatch.setenv("FONT_PATH", str(copy))
    assert find_cjk_font() == copy
    monkeypatch.setenv("FONT_PATH", str(DEJAVU))
    with pytest.raises(FontNotFoundError, match="FONT_PATH"):
        find_cjk_font()


def test_search_skips_non_cjk_candidates_and_fails_clearly(monkeypatch):
    monkeypatch.delenv("FONT_PATH", raising=False)
    monkeypatch.setattr(fonts, "CANDIDATE_PATHS", (str(DEJAVU), "/does/not/exist.ttc"))
    monkeypatch.setattr(fonts, "_matplotlib_candidates", lambda: [str(DEJAVU)])
    with pytest.raises(FontNotFoundError, match="No font with Chinese glyphs"):
        find_cjk_font()


def test_search_finds_a_system_font(cjk_font):
    assert has_cjk_glyphs(cjk_font)


def test_setup_matplotlib_puts_the_cjk_font_first(cjk_font):
    from matplotlib import font_manager

    with matplotlib.rc_context():  # leave other tests' settings alone
        path = setup_matplotlib()
        assert path == cjk_font
        name = font_manager.FontProperties(fname=str(path)).get_name()
        assert matplotlib.rcParams["font.sans-serif"][0] == name
        assert matplotlib.rcParams["axes.unicode_minus"] is False
        # matplotlib now resolves the default family to the CJK font file.
        resolved = font_manager.findfont(font_manager.FontProperties(), fallback_to_default=False)
        assert Path(resolved).resolve() == Path(path).resolve()
