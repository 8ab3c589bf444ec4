'''The library example README.md shows (from_preset, generate with two samplers, fit) runs as written.'''

import os
import subprocess
import sys

from tests.helpers.paths import REPO_ROOT

# Keep this text identical to README.md's library example.
EXAMPLE = """\
import keras, tfcaption
from tfcaption.data.records import read_records
from tfcaption.datasets.shapes.dataset import ShapesConfig, build_shapes_dataset

shapes = build_shapes_dataset("data", ShapesConfig(num_train=128, num_val=8, num_test=8, num_novel=8))
pairs = read_records(shapes, "train").map(lambda r: (r["image"], r["captions"][0])).batch(32)
captioner = tfcaption.ImageCaptioner.from_preset("small")  # untrained: fit builds the vocabulary
captioner.compile(optimizer=keras.optimizers.Adam(1e-3), sampler="beam")
captioner.fit(pairs, epochs=2)
image = next(read_records(shapes, "test").as_numpy_iterator())["image"]  # or a path, or a uint8 array
print(captioner.generate([image]), captioner.generate([image], sampler="greedy"))
"""


def test_the_readme_library_example_runs_as_written(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(EXAMPLE)
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("[") and last.count("[") == 2, last  # two lists of one caption each
