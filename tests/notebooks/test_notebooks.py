"""The Colab notebooks in notebooks/: committed clean, and executed top to bottom with TFCAPTION_QUICK=1.

Each notebook runs in its own kernel (nbclient, the `python3` kernel of this environment) with its own
working directory under pytest's tmp_path (`TFCAPTION_WORKDIR`), so they share nothing and write nothing
into the repository; any cell error fails that notebook's test with the cell's traceback. Beyond "it ran",
each notebook must produce its figures (PNG outputs, counted) and the key lines of text it exists to show.
Nothing here needs the network: quick mode writes its own stand-ins for downloads.

The seven kernels run two at a time (measured on 2 cores: 01 and 05 together took 43 s against 60 s one
after the other, since much of a quick run is single-threaded tracing and Python), longest first.
"""

import asyncio
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers.paths import REPO_ROOT

NOTEBOOKS_DIR = Path(REPO_ROOT) / "notebooks"
COLAB_URL = "https://colab.research.google.com/github/tfcaption/tfcaption/blob/main/notebooks/{name}.ipynb"
INSTALL = "git+https://github.com/tfcaption/tfcaption"
CELL_TIMEOUT_S = 240
PARALLEL = min(2, os.cpu_count() or 1)
ORDER = ("01_quickstart", "05_serving", "06_caption_with_blip", "03_pretrained_vit", "07_on_device",
         "02_your_own_images", "04_reproduce_m2")  # longest first

# What each notebook must show when run quick: at least `figures` PNG outputs, and each pattern (a regular
# expression) somewhere in its text outputs. A new notebook must be added here.
EXPECTED = {
    "01_quickstart": {
        "figures": 3,  # loss + validation CIDEr-D, captioned test images, attention figure
        "text": [r"epoch 2: train loss \d", r"test/model +\d", r"test/blind +\d", r"novel/model +\d",
                 r"novel/blind +\d", r"Blind baseline caption: '", r"METEOR", r"Ground-F1",
                 r"test grounding F1: \d\.\d{3}", r"history\.jsonl",
                 r"image 0  beam \d: +'", r"top-p 0\.9, seed 1: '", r"top-p with seed 1 again, the same captions: True"],
    },
    "02_your_own_images": {
        "figures": 2,  # the folder's images with captions, the test images captioned by the export
        "text": [r"120 captions of 60 images", r"Prepared folder into .*data/my_photos",
                 r"train +48 +\d+ ", r"test +6 +\d+ ", r"savedmodel/my_photos/1", r"test/model +\d",
                 r"test/blind +\d"],
    },
    "03_pretrained_vit": {
        "figures": 1,  # validation CIDEr-D of both runs
        "text": [r"ViT-tiny\.npz: custom sizes, patch 8, width 32, 2 heads, 2 blocks, MLP 64, trained at 32 px",
                 r"Image encoder: ViT weights \(custom sizes\) from .*ViT-tiny\.npz",
                 r"frozen: [\d,]+ trainable of [\d,]+ parameters", r"all: [\d,]+ trainable of [\d,]+ parameters",
                 r"test/frozen +\d", r"test/fine-tuned +\d", r"test/blind +\d"],
    },
    "04_reproduce_m2": {
        "figures": 1,  # attention over regions and meshed gates per word
        "text": [r"Running the cells below on tiny stand-ins", r"m2_tiny\.pth", r"3\+3 layers, d 64, 8 memory slots",
                 r'"checkpoint_sha256"', r"12 images, beam 5, 20 steps", r"test/collapse_repeats +\d",
                 r"test/raw +\d", r"391895: ", r"best beam, with attention: ",
                 r"the same caption as the best beam above: True"],
    },
    "05_serving": {
        "figures": 1,  # attention figure from the SavedModel
        "text": [r"savedmodel/shapes_m2_small/1/saved_model\.pb", r"caption_with_attention",
                 r"input +image_bytes +string", r'"tfcaption or tensorflow_text imported": false', r'\{"predictions": \[\{"beam_captions": \[',
                 r"PredictRequest for shapes_m2_small/serving_default", r"image_bytes: string, shape \[3\], 3 strings",
                 r"INVALID_ARGUMENT:\s+image_bytes\[1\]: empty string", r"image_bytes\[2\]: not a JPEG, PNG, GIF or BMP",
                 r"image_bytes\[3\]: not a decodable image", r"image_bytes\[4\]: 8236x30050 pixels exceeds the limit",
                 r"ImageError: image 1: not a decodable image", r"seed  7: '.*\(score -?\d",
                 r"seed 7, twice in one request and once alone, the same caption: True"],
    },
    "06_caption_with_blip": {
        "figures": 2,  # the images with their beam captions, the attention of each word piece
        "text": [r'"architecture": "BlipForConditionalGeneration"', r"runs/blip-tiny: [\d,]+ parameters, image \(32, 32\)",
                 r"greedy +no prompt +'", r"beam 3 +no prompt +'", r"beam 3 +prompt 'a picture of' +'a picture of",
                 r"the same captions as transformers' generate\(\): True",
                 r"pieces, attention \(\d+, 4, 4\)", r"saved_model\.pb",
                 r'"tfcaption or tensorflow_text imported": false', r"HTTP 200", r"served  image_0\.png: '"],
    },
    "07_on_device": {
        "figures": 2,  # sizes and latencies, test images captioned by TensorFlow and the int8 file
        "text": [r"LiteRT float32 +\d+\.\d\d MB", r"LiteRT dynamic int8 +\d+\.\d\d MB",
                 r"model\.tflite: built-in ops only: True \(.*WHILE", r"'pixels'", r"image 0, LiteRT float32: '",
                 r"LiteRT float32 gives TensorFlow's tokens on \d+ of 6 images",
                 r"LiteRT float32 +p50 +\d+\.\d\d ms +\( *\d+\.\dx lower than TensorFlow\)",
                 r"tfcaption\.load\(model\.tflite\) gives the interpreter's captions: True"],
    },
}


def notebook_paths():
    return sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def read(path):
    return nbformat.read(str(path), as_version=4)


def text_outputs(nb):
    """Every stream and text/plain output of the notebook, joined."""
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                parts.append(output.text)
            elif "data" in output and "text/plain" in output.data:
                parts.append(output.data["text/plain"])
    return "\n".join(parts)


def png_outputs(nb):
    return sum(1 for cell in nb.cells for output in cell.get("outputs", [])
               if "image/png" in output.get("data", {}))


def test_every_notebook_is_known():
    assert [p.stem for p in notebook_paths()] == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_committed_notebook_is_clean_with_badge_and_install_cell(name):
    nb = read(NOTEBOOKS_DIR / f"{name}.ipynb")
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs not stripped: {cell.source[:80]!r}"
    assert "widgets" not in nb.metadata
    first, setup = nb.cells[0], nb.cells[1]
    assert first.cell_type == "markdown"
    assert f"]({COLAB_URL.format(name=name)})" in first.source and "colab-badge.svg" in first.source
    assert setup.cell_type == "code"
    # installs from the repository only when tfcaption is missing, and only in Colab
    install = re.search(r'if importlib\.util\.find_spec\("tfcaption"\) is None:\n    if not IN_COLAB:\n        raise .*\n'
                        r'    subprocess\.run\(\[sys\.executable, "-m", "pip", "install", "-q", "' + re.escape(INSTALL),
                        setup.source)
    assert install, f"{name}: the first code cell must install {INSTALL} when tfcaption is missing, in Colab only"
    assert 'IN_COLAB = "google.colab" in sys.modules' in setup.source
    assert 'os.environ.get("TFCAPTION_QUICK") == "1"' in setup.source
    assert 'os.environ.get("TFCAPTION_WORKDIR")' in setup.source and "os.chdir(WORK)" in setup.source
    assert "strategy = make_strategy(STRATEGY)" in setup.source
    # a markdown cell says why before each step
    kinds = [cell.cell_type for cell in nb.cells]
    assert kinds.count("markdown") >= 4 and "code" in kinds
    # library calls, not the command line: no shell escapes, no tfcaption-* console scripts run
    code = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    assert not re.search(r"^\s*(!|%%bash|%%sh)", code, re.MULTILINE), f"{name} runs shell commands"
    assert not re.search(r"[\"']tfcaption-(train|evaluate|caption|export|prepare|convert-m2)[\"']", code)
    if name == "01_quickstart":
        assert "result = tfcaption.train(config)" in code


def run_notebook(path, workdir):
    """Executes the notebook at `path` in a fresh kernel with `workdir` as its cwd; returns it executed."""
    nb = read(path)
    env = {**os.environ, "TFCAPTION_QUICK": "1", "TFCAPTION_WORKDIR": str(workdir), "TF_CPP_MIN_LOG_LEVEL": "2",
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    # coalesce_streams: one print can reach the kernel's stdout as several stream messages
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", coalesce_streams=True,
                            resources={"metadata": {"path": str(workdir)}})
    asyncio.run(client.async_execute(env=env))  # its own event loop: safe in a worker thread
    return nb


def repository_entries():
    return {str(p.relative_to(REPO_ROOT)) for p in list(Path(REPO_ROOT).iterdir()) + list(NOTEBOOKS_DIR.iterdir())}


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Every notebook executed quick, PARALLEL at a time: {"notebooks": name -> executed notebook or the
    exception its run raised, "workdirs": name -> its TFCAPTION_WORKDIR, "written": new repository entries}."""
    assert sorted(ORDER) == sorted(EXPECTED)
    before = repository_entries()
    workdirs = {name: tmp_path_factory.mktemp(name) for name in ORDER}

    def run(name):
        try:
            return run_notebook(NOTEBOOKS_DIR / f"{name}.ipynb", workdirs[name])
        except Exception as error:  # raised again by that notebook's test
            return error

    with ThreadPoolExecutor(PARALLEL) as pool:
        notebooks = dict(zip(ORDER, pool.map(run, ORDER)))
    return {"notebooks": notebooks, "workdirs": workdirs, "written": repository_entries() - before}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_quick(name, executed):
    nb, workdir = executed["notebooks"][name], executed["workdirs"][name]
    if isinstance(nb, Exception):
        raise nb
    expected = EXPECTED[name]
    assert png_outputs(nb) >= expected["figures"], f"{name}: {png_outputs(nb)} figures, expected {expected['figures']}+"
    text = text_outputs(nb)
    missing = [pattern for pattern in expected["text"] if not re.search(pattern, text)]
    assert not missing, f"{name}: no output matches {missing}; the outputs were:\n{text[-6000:]}"
    assert "QUICK=True" in text and f"files under {workdir}" in text
    assert (workdir / "runs").is_dir(), f"{name} did not write its run under TFCAPTION_WORKDIR"


def test_notebooks_write_nothing_into_the_repository(executed):
    assert not executed["written"]
