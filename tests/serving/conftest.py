"""The exports and servers the serving tests share: two tiny untrained exports (different weights) and one
in-process server on the first, loaded once per session; good images and the direct SavedModel answers to
them (a module may narrow `images`, and `reference` follows)."""

import pytest

from tests.helpers.exports import tiny_export


@pytest.fixture(scope="session")
def serving_exports(tmp_path_factory):
    """{"root": export root holding tiny/1, "v1": its version directory, "other": a second tiny export with
    other weights (seed 1; copied in as a new version by the version tests)}."""
    root = tmp_path_factory.mktemp("serving_root")
    v1 = tiny_export(root, beam_size=2, seed=0)
    other = tiny_export(tmp_path_factory.mktemp("serving_other"), beam_size=2, seed=1)
    return {"root": str(root), "v1": v1, "other": other}


@pytest.fixture(scope="session")
def direct(serving_exports):
    """The first export loaded with tf.saved_model.load: the reference every server answer is checked against."""
    import tensorflow as tf

    return tf.saved_model.load(serving_exports["v1"])


@pytest.fixture(scope="session")
def repository(serving_exports):
    """A ModelRepository over the export root (not watched: in-process servers share it)."""
    from tfcaption.serving.models import ModelRepository

    return ModelRepository(serving_exports["root"])


@pytest.fixture(scope="session")
def server(repository):
    """An in-process server with the default options (dynamic batching up to 32 images / 5 ms), REST and gRPC."""
    from tests.serving.servers import InProcessServer

    with InProcessServer(repository, grpc=True) as running:
        yield running


@pytest.fixture(scope="module")
def images():
    from tests.serving.servers import good_images

    return good_images()


@pytest.fixture(scope="module")
def reference(direct, images):
    from tests.serving.servers import direct_predictions

    return direct_predictions(direct, images)
