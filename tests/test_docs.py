"""The README stays a user's page and the docs' links lead somewhere (no network, no MkDocs needed).

`mkdocs build --strict` (run by .ci/run after the tests) checks the site as a whole; these checks are the
cheap part that a plain `pytest` run catches too.
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_README_LINES = 250

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`+[^`]*`+")
# [text](target) and ![alt](target); the target ends at whitespace (a title may follow) or ')'.
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^)]*)?\)")


def markdown_files():
    return [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))


def links(path):
    """Link targets of a Markdown file, outside fenced code blocks and inline code."""
    targets, in_fence = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            targets += _LINK.findall(_INLINE_CODE.sub("", line))
    return targets


def is_relative(target):
    return not (re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "/")))


def test_link_parser():
    sample = ROOT / "docs" / "index.md"
    assert links(sample), "docs/index.md should link to the guides"
    line = "see [a](b.md#c) and ![i](img/x.png \"t\") but not `[x](y.md)`"
    assert _LINK.findall(_INLINE_CODE.sub("", line)) == ["b.md#c", "img/x.png"]


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move the detail into docs/")


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files(path):
    missing = []
    for target in links(path):
        if not is_relative(target):
            continue
        file_part = target.split("#", 1)[0].split("?", 1)[0]
        if file_part and not (path.parent / file_part).exists():
            missing.append(target)
    assert not missing, f"{path.relative_to(ROOT)} links to missing files: {missing}"


def test_mkdocs_nav_pages_exist():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = re.findall(r"^\s*-\s[^:\n]+:\s+(\S+\.md)\s*$", config, flags=re.M)
    assert pages, "mkdocs.yml should list its pages under nav:"
    missing = [page for page in pages if not (ROOT / "docs" / page).exists()]
    assert not missing, f"mkdocs.yml's nav names missing pages: {missing}"


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [line.strip() for line in readme.splitlines()
                if line.startswith("python3 -m venv") and "pytest" in line]
    assert len(commands) == 1, "README.md should give one test command"
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert commands[0] in ci_lines, ".ci/run must run the README's test command exactly"


def test_readme_cli_table_lists_every_console_script():
    setup = (ROOT / "setup.cfg").read_text(encoding="utf-8")
    block = setup.split("console_scripts =", 1)[1].split("\n[", 1)[0]
    scripts = re.findall(r"^\s+([\w-]+)\s*=", block, flags=re.M)
    assert scripts, "setup.cfg should declare console_scripts"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [name for name in scripts if f"| `{name}` |" not in readme]
    assert not missing, f"README.md's command-line table lacks {missing}"
