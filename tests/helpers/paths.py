"""Where things are: the repository root (a str, for cwd= and PYTHONPATH) and this folder (for the sys.path of
child processes that import a TensorFlow-only helper from it without the tests package)."""

import os

HELPERS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HELPERS_DIR))
