"""A pytest plugin: under ``CI`` (the environment variable set and non-empty) every skip is a failure.

A test that skips because a fixture file, h5py or java is missing tests nothing, and in CI that must
not pass unnoticed. Outside CI skips stay skips. ``xfail`` is left alone (pytest reports an xfail as a
skip carrying ``wasxfail``). Covers skips at setup (``skipif`` marks, ``pytest.skip`` in a fixture), in
the test body, and at collection (a module-level ``pytest.skip``/``importorskip``, which then becomes a
collection error). tests/conftest.py loads it; tests/test_ci_skips.py checks it with ``pytester``.
"""

import os

import pytest

CI_VARIABLE = "CI"


def in_ci():
    return bool(os.environ.get(CI_VARIABLE))


def _skip_reason(longrepr):
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, lineno, reason)
        path, lineno, reason = longrepr
        return f"{reason} ({path}:{lineno})"
    return str(longrepr)


def _failure_text(longrepr):
    reason = _skip_reason(longrepr)
    if reason.startswith("Skipped: "):
        reason = reason[len("Skipped: "):]
    return f"skipped under CI={os.environ.get(CI_VARIABLE)!r}, which counts as a failure: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.skipped and in_ci() and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = _failure_text(report.longrepr)
        report.skipped_in_ci = True
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    if report.skipped and in_ci():
        report.outcome = "failed"
        report.longrepr = _failure_text(report.longrepr)
    return report


def pytest_report_teststatus(report, config):
    # A skip turned failure at setup would otherwise be counted as an error: count it as failed.
    if getattr(report, "skipped_in_ci", False) and report.when == "setup":
        return "failed", "F", "FAILED"
    return None
