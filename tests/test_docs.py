"""The documentation stays true to the code: docs/options.md is `--help`, every option is documented,
the README stays short, and links between the pages resolve."""

from __future__ import annotations

import difflib
import re
import unicodedata
from pathlib import Path

import pytest
import typer.main

from shufflenet_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
OPTIONS = DOCS / "options.md"

README_PROSE_WORDS = 1500  # a five-minute read; the rest belongs in docs/


def _commands() -> dict:
    # typer may carry its own copy of click, so the command objects are duck-typed, not isinstance-checked.
    return dict(typer.main.get_command(app).commands)


def test_options_page_matches_help():
    cogapp = pytest.importorskip("cogapp", reason="cogapp is part of the test extra")
    text = OPTIONS.read_text(encoding="utf-8")
    regenerated = cogapp.Cog().process_string(text, fname=str(OPTIONS))
    if regenerated != text:
        diff = "".join(
            difflib.unified_diff(
                text.splitlines(keepends=True),
                regenerated.splitlines(keepends=True),
                "docs/options.md",
                "docs/options.md, regenerated",
            )
        )
        pytest.fail(f"docs/options.md is stale: run `cog -r docs/options.md`\n{diff}")


def test_options_page_has_a_block_per_command():
    text = OPTIONS.read_text(encoding="utf-8")
    assert "[[[cog show_help() ]]]" in text
    for name in _commands():
        assert f"## shufflenet {name}\n" in text, f"docs/options.md has no section for `{name}`"
        assert f'[[[cog show_help("{name}") ]]]' in text, f"docs/options.md does not generate `{name} --help`"


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_option_is_documented(name):
    text = OPTIONS.read_text(encoding="utf-8")
    section = text.split(f"## shufflenet {name}\n", 1)[1].split("\n## shufflenet ", 1)[0]
    for param in _commands()[name].params:
        if param.param_type_name == "option":
            for opt in [*param.opts, *param.secondary_opts]:
                assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", section), (
                    f"`shufflenet {name} {opt}` is missing from docs/options.md"
                )
        else:
            shown = getattr(param, "metavar", None) or param.name.upper()
            assert shown in section, f"argument {shown} of `{name}` is missing from docs/options.md"


def _prose(markdown: str) -> str:
    """The text outside ``` blocks, as `sed '/^```/,/^```/d'` leaves it."""
    return re.sub(r"^```.*?^```[^\n]*$", "", markdown, flags=re.M | re.S)


def test_readme_is_short():
    words = len(_prose(README.read_text(encoding="utf-8")).split())
    assert words <= README_PROSE_WORDS, f"README.md has {words} words of prose; move detail into docs/"


def test_readme_keeps_the_ci_test_command():
    # CI greps the README for this line and runs it.
    assert "$ pip install -e '.[test]' && pytest\n" in README.read_text(encoding="utf-8")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in _prose(path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            slug = _slug(match.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


PAGES = [README, *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        assert linked.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked), f"{page.name} links to {target}: no such heading"
