"""Optional dependencies of some tests: h5py and vit-keras (in the ``test`` extra) and java (METEOR, the PTB
tokenizer).

Tests that need them are marked ``@needs_h5py`` / ``@needs_vit_keras`` / ``@needs_java`` instead of being skipped at import,
so that every skip is a test report (a failure under ``CI``, see tests/helpers/ci_skips.py) and the
module's other tests still run.
"""

import shutil

import pytest

try:
    import h5py
except ImportError:  # pragma: no cover - the test extra installs it
    h5py = None

try:
    import vit_keras.utils
    import vit_keras.vit
except ImportError:  # pragma: no cover - the test extra installs it (with cv2, which it imports undeclared)
    vit_keras = None

H5PY_REASON = "h5py missing: pip install -e .[test]"
VIT_KERAS_REASON = "vit-keras missing: pip install -e .[test] (or .[vit])"
JAVA_REASON = "java not found on PATH (METEOR and the PTB tokenizer need it)"

needs_h5py = pytest.mark.skipif(h5py is None, reason=H5PY_REASON)
needs_vit_keras = pytest.mark.skipif(vit_keras is None, reason=VIT_KERAS_REASON)
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason=JAVA_REASON)


def skip_without_h5py():
    """For use inside a pytest fixture: skips (a failure under CI) when h5py is not installed."""
    if h5py is None:
        pytest.skip(H5PY_REASON)


def skip_without_java():
    """For use inside a pytest fixture: skips (a failure under CI) when java is not on the PATH."""
    if shutil.which("java") is None:
        pytest.skip(JAVA_REASON)
