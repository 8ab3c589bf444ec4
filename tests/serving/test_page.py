"""The web page in a real headless Chromium (Debian's chromium and chromium-driver, driven by Selenium): upload
a shapes image, the caption, the beams, one attention map per word of the best beam and the meshed gates
appear (an export written when the attention was greedy shows its greedy caption as a row of its own); hovering
a word shows its map; a screenshot is saved and checked not to be blank; the sampling controls sample with the
settings typed and show the server's error for a bad one; on a BLIP export with prompts baked in, a prompt
selector (the default first) captions with the chosen prompt through `caption_with_prompt`."""

import os

import numpy as np
import pytest

from tests.serving.servers import b64, direct_predictions, predict, shapes_png, signature_stats

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1000"]
needs_chromium = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="Debian's chromium and chromium-driver are needed (apt-get install chromium chromium-driver; .ci/run does)")


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_state(driver, wanted, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: d.execute_script("return document.body.dataset.state") in wanted)
    return driver.execute_script("return document.body.dataset.state")


def canvas_pixels(driver, selector):
    """RGBA pixels of a canvas, read in the page."""
    data = driver.execute_script(
        "const c = document.querySelector(arguments[0]);"
        "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);", selector)
    width, height = driver.execute_script(
        "const c = document.querySelector(arguments[0]); return [c.width, c.height];", selector)
    return np.array(data, np.uint8).reshape(height, width, 4)


@needs_chromium
def test_page_captions_an_uploaded_image_and_draws_the_attention(server, direct, browser, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    # A shapes scene whose caption has at least two words (an untrained model may stop at once).
    candidates = [shapes_png(i) for i in range(12)]
    attended = direct_predictions(direct, candidates, "caption_with_attention")
    index = next(i for i, a in enumerate(attended) if len(a["caption"].split()) >= 2)
    path = tmp_path / "scene.png"
    path.write_bytes(candidates[index])
    beam = direct_predictions(direct, [candidates[index]])[0]
    assert attended[index]["caption"] == beam["caption"]  # the attention follows the best beam
    words = beam["caption"].decode().split()

    browser.get(server.url + "/")
    assert wait_state(browser, ("idle", "error")) == "idle", browser.find_element(By.ID, "error").text
    assert "tiny (version 1)" in browser.find_element(By.ID, "model").text
    assert not browser.find_element(By.ID, "promptbox").is_displayed()  # no prompts baked into this export
    browser.find_element(By.ID, "file").send_keys(str(path))
    assert wait_state(browser, ("ready", "error")) == "ready", browser.find_element(By.ID, "error").text

    assert browser.find_element(By.ID, "caption").text == beam["caption"].decode()
    beams = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#beams li")]
    assert beams[0].startswith(beam["caption"].decode()) and f"{beam['score']:.3f}" in beams[0]
    assert "best (the attention below follows it)" in beams[0]
    assert len(beams) == len(beam["beam_captions"]) == 2 and "greedy" not in " ".join(beams)  # the export's 2 beams
    assert all(text.startswith(c.decode()) for text, c in zip(beams, beam["beam_captions"]))
    buttons = browser.find_elements(By.CSS_SELECTOR, "#words .word")
    assert [b.text for b in buttons] == words
    assert len(browser.find_elements(By.CSS_SELECTOR, "#maps canvas")) == len(words)
    gate_rows = browser.find_elements(By.CSS_SELECTOR, "#gatetable tr[data-index]")
    assert len(gate_rows) == len(words) and browser.find_element(By.ID, "gates").is_displayed()

    # The heatmap: the view is the image with a colour map over it, different for two words.
    first = canvas_pixels(browser, "#view")
    assert browser.find_element(By.ID, "view").get_attribute("data-word") == words[0]
    assert first[..., 3].min() == 255 and first[..., :3].std() > 10
    assert len(np.unique(first[..., :3].reshape(-1, 3), axis=0)) > 500
    ActionChains(browser).move_to_element(buttons[1]).perform()
    assert browser.find_element(By.ID, "view").get_attribute("data-word") == words[1]
    assert "active" in buttons[1].get_attribute("class")
    second = canvas_pixels(browser, "#view")
    assert np.abs(first.astype(int) - second.astype(int)).max() > 0  # another word, another map

    screenshot = tmp_path / "page.png"
    assert browser.save_screenshot(str(screenshot))
    shot = np.asarray(Image.open(screenshot).convert("RGB"))
    assert shot.shape[0] >= 600 and shot.shape[1] >= 1000
    assert shot.std() > 20 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 1000, "blank screenshot"


@needs_chromium
def test_page_shows_the_servers_error_for_a_non_image(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    path = tmp_path / "notes.png"
    path.write_bytes(b"these are notes, not a PNG")
    browser.get(server.url + "/")
    wait_state(browser, ("idle",))
    browser.find_element(By.ID, "file").send_keys(str(path))
    assert wait_state(browser, ("ready", "error")) == "error"
    error = browser.find_element(By.ID, "error").text
    assert "HTTP 400" in error and "image_bytes[0]: not a JPEG, PNG, GIF or BMP image" in error


@needs_chromium
def test_page_samples_with_the_controls_settings_and_shows_a_bad_settings_error(server, direct, browser, tmp_path):
    from selenium.webdriver.common.by import By

    from tests.serving.test_sampling import direct_sample

    image = shapes_png(3)
    path = tmp_path / "scene.png"
    path.write_bytes(image)
    browser.get(server.url + "/")
    assert wait_state(browser, ("idle", "error")) == "idle", browser.find_element(By.ID, "error").text
    assert browser.find_element(By.ID, "sampling").is_displayed()  # the export has the `sample` signature
    browser.find_element(By.ID, "seed").send_keys("42")
    browser.find_element(By.ID, "file").send_keys(str(path))
    assert wait_state(browser, ("ready", "error")) == "ready", browser.find_element(By.ID, "error").text
    expected = direct_sample(direct, image, temperature=1.0, top_p=0.9, seed=42)  # the controls' defaults
    assert browser.find_element(By.ID, "sampled").text == expected["caption"].decode()
    assert "seed 42" in browser.find_element(By.ID, "samplescore").text

    def set_value(name, value):
        field = browser.find_element(By.ID, name)
        field.clear()
        field.send_keys(value)

    set_value("temperature", "0")  # greedy
    browser.execute_script("document.body.dataset.state = 'busy'")
    browser.find_element(By.ID, "sample").click()
    assert wait_state(browser, ("ready", "error")) == "ready", browser.find_element(By.ID, "error").text
    greedy = direct_sample(direct, image, temperature=0.0, top_p=0.9, seed=42)
    assert browser.find_element(By.ID, "sampled").text == greedy["caption"].decode()

    set_value("temperature", "-1")
    browser.find_element(By.ID, "sample").click()
    assert wait_state(browser, ("error",)) == "error"
    error = browser.find_element(By.ID, "error").text
    assert "HTTP 400" in error and "temperature[0]: must be a number >= 0" in error
    assert browser.find_element(By.ID, "caption").text  # the caption and beams stay


@needs_chromium
def test_page_shows_an_export_with_the_greedy_attention_signature_as_before(browser, tmp_path):
    # Written when `caption_with_attention` was greedy whatever the beam (serving config "attention_decoding":
    # "greedy"): its greedy caption, whose words the maps follow, is a row of its own after the beams.
    import tensorflow as tf
    from selenium.webdriver.common.by import By

    from tests.helpers.paths import REPO_ROOT
    from tests.serving.servers import InProcessServer
    from tfcaption.serving.models import ModelRepository

    legacy = f"{REPO_ROOT}/tests/fixtures/legacy_v1"
    path = f"{legacy}/image.png"
    with open(path, "rb") as f:
        image = f.read()
    loaded = tf.saved_model.load(f"{legacy}/export/pixels/1")
    beam = direct_predictions(loaded, [image])[0]
    greedy = direct_predictions(loaded, [image], "caption_with_attention")[0]
    with InProcessServer(ModelRepository(f"{legacy}/export/pixels/1")) as server:
        browser.get(server.url + "/")
        assert wait_state(browser, ("idle", "error")) == "idle", browser.find_element(By.ID, "error").text
        browser.find_element(By.ID, "file").send_keys(path)
        assert wait_state(browser, ("ready", "error")) == "ready", browser.find_element(By.ID, "error").text
        beams = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#beams li")]
        assert browser.find_element(By.ID, "caption").text == beam["caption"].decode()
        assert len(beams) == 2  # its best beam (it predates `beam_captions`), then the greedy caption
        assert beams[0].startswith(beam["caption"].decode()) and "beam search, beam 2" in beams[0]
        assert beams[1].startswith(greedy["caption"].decode()) and "greedy (the attention below follows it)" in beams[1]
        assert "follows" not in beams[0]
        words = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#words .word")]
        assert words == greedy["caption"].decode().split()


@needs_chromium
def test_page_offers_the_baked_prompts_and_captions_with_the_chosen_one(blip_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from tests.helpers.hf_fixture import baked_prompts, images

    default, other = baked_prompts()
    path = images()[0]

    def rest(prompt):
        body = {"instances": [{"image_bytes": b64(path.read_bytes()), "prompt": prompt}]}
        response = predict(blip_server.url, "prompt", body, signature="caption_with_prompt")
        assert response.status_code == 200, response.text
        return response.json()["predictions"][0]

    def prompt_calls():
        return (signature_stats(blip_server.stats(), "caption_with_prompt") or {"requests": 0})["requests"]

    browser.get(blip_server.url + "/")
    assert wait_state(browser, ("idle", "error")) == "idle", browser.find_element(By.ID, "error").text
    assert browser.find_element(By.ID, "promptbox").is_displayed()
    choices = [option.text for option in browser.find_elements(By.CSS_SELECTOR, "#prompt option")]
    assert choices == [f"{default} (default)", other]

    before = prompt_calls()
    browser.find_element(By.ID, "file").send_keys(str(path))
    assert wait_state(browser, ("ready", "error")) == "ready", browser.find_element(By.ID, "error").text
    expected = rest(default)
    assert prompt_calls() == before + 2  # the page's request and ours went to caption_with_prompt
    assert browser.find_element(By.ID, "caption").text == expected["caption"]
    beams = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#beams li")]
    assert len(beams) == len(expected["beam_captions"]) == 3
    assert all(text.startswith(caption) for text, caption in zip(beams, expected["beam_captions"]))
    assert "best (the attention below follows it)" in beams[0]
    # The words are the generated WordPieces: the prompt's pieces and [SEP] / [PAD] are not listed.
    words = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#words .word")]
    assert words and " ".join(words).replace(" ##", "") == expected["caption"][len(default):].strip()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#maps canvas")) == len(words)
    assert not browser.find_element(By.ID, "promptnote").is_displayed()

    browser.execute_script("document.body.dataset.state = 'busy'")
    Select(browser.find_element(By.ID, "prompt")).select_by_value(other)
    assert wait_state(browser, ("ready", "error")) == "ready", browser.find_element(By.ID, "error").text
    expected = rest(other)
    assert expected["caption"].startswith(other)
    assert browser.find_element(By.ID, "caption").text == expected["caption"]
    assert f"with the prompt \u201c{other}\u201d" in browser.find_element(By.ID, "status").text
    # caption_with_attention decodes with the default prompt only: no maps of another caption.
    assert not browser.find_element(By.ID, "wordsection").is_displayed()
    note = browser.find_element(By.ID, "promptnote")
    assert note.is_displayed() and f"the default prompt only (\u201c{default}\u201d)" in note.text
