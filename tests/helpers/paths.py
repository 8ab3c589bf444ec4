"""Where things are: the repository root (a str, for cwd= and PYTHONPATH)."""

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
