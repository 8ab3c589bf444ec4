"""tests/helpers/ci_skips.py: under CI a skipped test is a failure naming its reason; outside CI a skip.

Each case runs an inner pytest session (``pytester``) on a small file whose tests skip in each way the
suite does (a skipif mark, pytest.skip in a fixture and in the body, a module-level skip), with the
plugin loaded and the ``CI`` variable set, empty or unset.
"""

import pytest

INNER = '''
import pytest


@pytest.fixture
def needs_a_file():
    pytest.skip("fixture file not found at /nowhere")


@pytest.mark.skipif(True, reason="M2 reference fixture not found at /nowhere")
def test_marked():
    pass


def test_skips_in_its_fixture(needs_a_file):
    pass


def test_skips_in_its_body():
    pytest.skip("h5py missing: pip install -e .[test]")


@pytest.mark.xfail(reason="a known bug")
def test_expected_failure():
    assert False


def test_passes():
    pass
'''

MODULE_LEVEL = '''
import pytest

pytest.skip("java not found on PATH", allow_module_level=True)


def test_never_collected():
    pass
'''


def _run(pytester, monkeypatch, ci, source=INNER, *options):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    pytester.makepyfile(test_inner=source)
    return pytester.runpytest_inprocess("-p", "tests.helpers.ci_skips", "-rA", "-p", "no:cacheprovider", *options)


@pytest.mark.parametrize("ci", [None, ""], ids=["unset", "empty"])
def test_outside_ci_skips_stay_skips(pytester, monkeypatch, ci):
    result = _run(pytester, monkeypatch, ci)
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)
    assert result.ret == pytest.ExitCode.OK


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_every_skip_is_a_failure_with_its_reason(pytester, monkeypatch, ci):
    result = _run(pytester, monkeypatch, ci)
    result.assert_outcomes(passed=1, failed=3, xfailed=1)  # skipped=0, errors=0: setup skips count as failed
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines_random([
        "*FAILED*test_marked*M2 reference fixture not found at /nowhere*",
        "*FAILED*test_skips_in_its_fixture*fixture file not found at /nowhere*",
        "*FAILED*test_skips_in_its_body*h5py missing: pip install -e .[[]test[]]*",
        "*XFAIL*test_expected_failure*a known bug*",
    ])
    assert f"skipped under CI={ci!r}, which counts as a failure" in result.stdout.str()


def test_under_ci_and_xdist_workers_every_skip_is_a_failure_with_its_reason(pytester, monkeypatch):
    # The README's test command runs the suite in pytest-xdist workers, whose reports the main process prints.
    result = _run(pytester, monkeypatch, "true", INNER, "-n", "2")
    result.assert_outcomes(passed=1, failed=3, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines_random([
        "*FAILED*test_marked*M2 reference fixture not found at /nowhere*",
        "*FAILED*test_skips_in_its_fixture*fixture file not found at /nowhere*",
        "*FAILED*test_skips_in_its_body*h5py missing: pip install -e .[[]test[]]*",
    ])


def test_outside_ci_a_module_level_skip_stays_a_skip(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, None, MODULE_LEVEL)
    result.assert_outcomes(skipped=1)


def test_under_ci_a_module_level_skip_is_a_collection_error(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, "true", MODULE_LEVEL)
    result.assert_outcomes(errors=1)
    assert result.ret == pytest.ExitCode.INTERRUPTED  # pytest stops on collection errors
    assert "java not found on PATH" in result.stdout.str()
