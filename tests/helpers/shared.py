"""Build once per test session, also when pytest-xdist splits the session across worker processes.

Under xdist each worker has its own session, so a session-scoped fixture would be built again in every
worker that uses it (a tiny training run twice, on the same two cores). `built_once` lets the first worker
build it into the session's common temporary directory, under a file lock the others wait on, and hands
every worker the same directory and result. What it builds is read-only to the tests that share it.
"""

import fcntl
import json
import os
import shutil


def built_once(tmp_path_factory, name, build):
    """`build(directory)`'s result for a fresh `directory`, built once per test session.

    Without xdist this is `build(tmp_path_factory.mktemp(name))`. Under xdist the first worker to take the
    lock builds into `name` under the session's common temporary directory (the parent of each worker's
    own) and writes the result (anything JSON can hold) next to it; the other workers wait for the lock
    and read that result. A build that raised is retried by the next worker that asks."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return build(tmp_path_factory.mktemp(name))
    root = tmp_path_factory.getbasetemp().parent
    directory, result = root / name, root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not result.exists():
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
            value = build(directory)
            result.write_text(json.dumps(value))
        return json.loads(result.read_text())
