"""Versions over real HTTP: the newest version is served, a new version directory is picked up without a
restart (the old one answers until then and is then unloaded), and a broken version does not stop the one
being served."""

import time

import requests

from tests.serving.servers import (InProcessServer, assert_matches, b64, copy_version, direct_predictions,
                                   good_images, predict)


def wait_for(condition, timeout=60, step=0.1):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(step)


def status(url):
    return {s["version"]: s for s in requests.get(f"{url}/v1/models/tiny", timeout=10).json()["model_version_status"]}


def test_new_version_is_picked_up_without_restart(tmp_path, serving_exports, direct):
    import tensorflow as tf

    from tfcaption.serving.app import ServerOptions
    from tfcaption.serving.models import ModelRepository

    images = good_images()[:2]
    first = direct_predictions(direct, images)
    second = direct_predictions(tf.saved_model.load(serving_exports["other"]), images)
    assert [r["caption"] for r in first] != [r["caption"] for r in second] or \
        [r["score"] for r in first] != [r["score"] for r in second]  # the versions really differ
    model_dir = tmp_path / "tiny"
    model_dir.mkdir()
    copy_version(serving_exports["v1"], model_dir, 1)
    repository = ModelRepository(str(model_dir))
    body = {"instances": [b64(i) for i in images]}
    with InProcessServer(repository, ServerOptions(poll_seconds=0.2)) as server:
        for prediction, expected in zip(predict(server.url, "tiny", body).json()["predictions"], first):
            assert_matches(prediction, expected)
        copy_version(serving_exports["other"], model_dir, 2)
        wait_for(lambda: status(server.url).get("2", {}).get("state") == "AVAILABLE")
        wait_for(lambda: status(server.url)["1"]["state"] == "END")
        for prediction, expected in zip(predict(server.url, "tiny", body).json()["predictions"], second):
            assert_matches(prediction, expected)
        assert predict(server.url, "tiny", body, version=2).status_code == 200
        gone = predict(server.url, "tiny", body, version=1)
        assert gone.status_code == 404 and "Specific(tiny, 1)" in gone.json()["error"]
        metadata = requests.get(f"{server.url}/v1/models/tiny/metadata", timeout=10).json()
        assert metadata["model_spec"]["version"] == "2"

        # A broken version 3 is reported and version 2 goes on answering.
        broken = model_dir / ".staging-3"
        broken.mkdir()
        (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
        broken.rename(model_dir / "3")
        wait_for(lambda: status(server.url).get("3", {}).get("status", {}).get("error_code") == "UNKNOWN")
        assert status(server.url)["2"]["state"] == "AVAILABLE" and status(server.url)["3"]["state"] == "END"
        for prediction, expected in zip(predict(server.url, "tiny", body).json()["predictions"], second):
            assert_matches(prediction, expected)
