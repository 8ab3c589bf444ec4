"""The shared M2 reference fixture (``../shared/fixtures/m2_reference`` beside the repository), and checks
that say where it was looked for when files are missing.

The fixture is a small M2 saved by real PyTorch in the released checkpoint formats, with what the
authors' code computes for it (see its README). Tests that need it are marked ``@requires_fixture(...)``;
fixtures that need it call ``skip_without_fixture(...)``. Under ``CI`` such a skip is a failure
(see tests/helpers/ci_skips.py).
"""

from pathlib import Path

import pytest

from tests.helpers.paths import REPO_ROOT

FIXTURE = (Path(REPO_ROOT) / ".." / "shared" / "fixtures" / "m2_reference").resolve()
FILES = ("config.json", "m2_tiny.pth", "m2_tiny_zip.pth", "vocab.pkl", "inputs.npz", "expected.npz")


def missing_files(*names):
    """The names among `names` (default: every fixture file) that are not in the fixture directory."""
    return [n for n in (names or FILES) if not (FIXTURE / n).exists()]


def fixture_reason(*names):
    """Why a test needing `names` cannot run, or None when they are all there."""
    missing = missing_files(*names)
    if not missing:
        return None
    return f"M2 reference fixture not found at {FIXTURE} (missing: {', '.join(missing)})"


def requires_fixture(*names):
    """A skipif mark for tests that read `names` (default: every fixture file) from the fixture."""
    reason = fixture_reason(*names)
    return pytest.mark.skipif(reason is not None, reason=reason or "M2 reference fixture present")


def skip_without_fixture(*names):
    """For use inside a pytest fixture: skips (a failure under CI) when any of `names` is missing."""
    reason = fixture_reason(*names)
    if reason is not None:
        pytest.skip(reason)
