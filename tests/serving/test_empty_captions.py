"""An empty caption over REST and on the page: an export of a model that emits <eos> first by construction
(tests/helpers/fixed_token.py) answers `""` with its tokens and scores, the attention signature gives zero
attention rows after <eos>, and the page says "(empty caption)" and that there are no words."""

import numpy as np
import pytest

from tests.helpers.fixed_token import eos_first_export
from tests.helpers.exports import TINY_MAX_STEPS
from tests.serving.servers import b64, predict, shapes_png
from tests.serving.test_page import browser, needs_chromium, wait_state  # noqa: F401  (browser: a fixture)


@pytest.fixture(scope="module")
def silent_server(tmp_path_factory):
    """An in-process server over one export, "silent", whose every caption is empty."""
    from tests.serving.servers import InProcessServer
    from tfcaption.serving.models import ModelRepository

    root = tmp_path_factory.mktemp("silent_root")
    eos_first_export(root)
    with InProcessServer(ModelRepository(str(root))) as running:
        yield running


@pytest.fixture(scope="module")
def scenes():
    return [shapes_png(i) for i in range(3)]


def test_rest_answers_empty_captions(silent_server, scenes):
    response = predict(silent_server.url, "silent", {"instances": [b64(s) for s in scenes]})
    assert response.status_code == 200, response.text
    for prediction in response.json()["predictions"]:
        assert prediction["caption"] == "" and prediction["beam_captions"][0] == ""
        assert prediction["tokens"][0] == 3 and len(prediction["tokens"]) == TINY_MAX_STEPS  # <eos> first
        assert np.isfinite(prediction["score"]) and prediction["score"] == prediction["beam_scores"][0]

    response = predict(silent_server.url, "silent", {"inputs": [b64(s) for s in scenes]},
                       signature="caption_with_attention")
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert outputs["caption"] == ["", "", ""] and [t[0] for t in outputs["tokens"]] == [3, 3, 3]
    attention = np.array(outputs["attention"])
    assert attention.shape == (3, TINY_MAX_STEPS, 16)
    # The <eos> step is the caption's last; the steps after it are zero.
    np.testing.assert_allclose(attention[:, 0].sum(-1), 1.0, atol=1e-5)
    assert not attention[:, 1:].any()


@needs_chromium
def test_page_shows_an_empty_caption(silent_server, scenes, browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By

    path = tmp_path / "scene.png"
    path.write_bytes(scenes[0])
    browser.get(silent_server.url + "/")
    assert wait_state(browser, ("idle", "error")) == "idle", browser.find_element(By.ID, "error").text
    browser.find_element(By.ID, "file").send_keys(str(path))
    assert wait_state(browser, ("ready", "error")) == "ready", browser.find_element(By.ID, "error").text

    caption = browser.find_element(By.ID, "caption")
    assert caption.text == "(empty caption)" and "empty" in caption.get_attribute("class")
    beams = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#beams li")]
    # The best beam is the empty caption, and the attention shown follows it (no separate greedy row).
    assert beams[0].startswith("(empty caption)") and "attention below follows it" in beams[0]
    assert browser.find_elements(By.CSS_SELECTOR, "#words .word") == []
    assert browser.find_elements(By.CSS_SELECTOR, "#maps canvas") == []
    assert "no words" in browser.find_element(By.ID, "words").text
    assert not browser.find_element(By.ID, "gates").is_displayed()
    assert not browser.find_element(By.ID, "legend").is_displayed()
    assert browser.find_element(By.ID, "view").get_attribute("data-word") == ""
