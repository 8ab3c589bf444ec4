"""README.md's library example runs as written: this test executes the python block of README.md itself (the one
source: docs/index.md includes the same lines with pymdownx.snippets), so the page and the test cannot drift."""

import os
import pathlib
import re
import subprocess
import sys

from tests.helpers.paths import REPO_ROOT

README = pathlib.Path(REPO_ROOT) / "README.md"
SECTION = re.compile(r"<!-- --8<-- \[start:example\] -->\n```python\n(.*?)```\n<!-- --8<-- \[end:example\] -->",
                     re.S)


def readme_example():
    """The code of README.md's "library in ten lines" block (between its snippet markers)."""
    found = SECTION.findall(README.read_text(encoding="utf-8"))
    assert len(found) == 1, "README.md should hold one python block between the example's snippet markers"
    return found[0]


def test_the_example_is_at_most_ten_lines_and_docs_include_it():
    code = [line for line in readme_example().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(code) <= 10, f"the library example has {len(code)} lines of code (at most 10)"
    for needed in ("from_preset(", ".fit(", "sampler=", ".generate("):
        assert needed in readme_example(), needed
    index = (pathlib.Path(REPO_ROOT) / "docs" / "index.md").read_text(encoding="utf-8")
    assert '--8<-- "README.md:example"' in index, "docs/index.md should include README.md's example, not copy it"


def test_the_readme_library_example_runs_as_written(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("[") and last.count("[") == 2 and last.count("'") >= 8, last  # two lists of 2 captions
