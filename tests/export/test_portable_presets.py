"""Every preset through LiteRT and ONNX: each preset at test size (`tiny_overrides`, random weights: conversion
needs no training) converts with built-in LiteRT ops and its file gives TensorFlow's tokens on the same inputs;
ONNX for one preset per op family beyond tests/export/test_portable.py's M2 (`small`): region features with
meshed attention, the ViT tower with CPTR's transformer decoder, and BLIP's BERT decoder (an imported fixture
run, blip_a). Region-feature files take float32 features [1, R, D] with zero rows as padding.
Each file is written once per module."""

import json
import os

import numpy as np
import pytest

from tests.helpers.exports import encode, random_rgb
from tests.helpers.optional import h5py, needs_h5py
from tests.helpers.tiny import tiny_overrides
from tfcaption.models import PRESETS, CaptionerConfig

WORDS = ["<unk>", "<pad>", "<bos>", "<eos>", "a", "red", "blue", "green", "circle", "square", "star", "one", "two",
         "big"]
STEPS = 6
REGIONS = 5
FEATURE_DIM = 12  # tiny_overrides' region features
# small is test_portable.py's tiny run.
LITERT = [(name, 2) for name in sorted(set(PRESETS) - {"small"})] + [("cptr_small", 1), ("m2_regions", 1)]
# The CNN backbone's ONNX file (spatial_attention) also gives TensorFlow's tokens; left out for the suite's time.
ONNX = ["m2_regions", "cptr"]


def _is_regions(name):
    return CaptionerConfig.from_preset(name).image_encoder.type == "regions"


@pytest.fixture(scope="module")
def captioners():
    """Preset name -> an `ImageCaptioner` at test size with seeded random weights, built on first use."""
    import keras

    from tfcaption.models.image_captioner import ImageCaptioner

    built = {}

    def get(name):
        if name not in built:
            keras.utils.set_random_seed(0)
            built[name] = ImageCaptioner.from_preset(name, vocabulary=WORDS, **tiny_overrides(name))
        return built[name]

    return get


def _inputs(captioner):
    """Two images: encoded PNGs at the model's input size, or region features (3 and 5 regions, the first
    short of the file's 5)."""
    model = captioner.backbone
    if model.input_key == "features":
        rng = np.random.default_rng(1)
        return [rng.normal(0.5, 1.0, (n, FEATURE_DIM)).astype(np.float32) for n in (3, REGIONS)]
    from tfcaption.data.pipeline import image_hw

    height, width = image_hw(model.image_encoder.image_size)
    return [encode(random_rgb(height, width, seed=s)) for s in (0, 1)]


def _tensorflow_tokens(captioner, beam_size, inputs):
    """The exported function run by TensorFlow on the file's input for each of `inputs`: tokens [k, T] each."""
    import tensorflow as tf

    from tfcaption.export.portable import image_pixels, pixels_to_tokens
    from tfcaption.export.portable_runtime import feature_input

    regions = REGIONS if captioner.backbone.input_key == "features" else None
    function = pixels_to_tokens(captioner, beam_size, STEPS, regions=regions)
    tokens = []
    for data in inputs:
        if regions:
            array = feature_input("features", data, REGIONS, FEATURE_DIM)
        else:
            array = image_pixels(data, captioner.backbone.image_encoder.image_size)[None]
        tokens.append(function(tf.constant(array))["tokens"].numpy()[0])
    return tokens


@pytest.fixture(scope="module")
def files(captioners, tmp_path_factory):
    """(format, name, beam size) -> the exported file, written on first use."""
    from tfcaption.export.litert import export_litert
    from tfcaption.export.onnx import export_onnx

    root, written = tmp_path_factory.mktemp("presets"), {}

    def get(fmt, name, beam_size):
        key = (fmt, name, beam_size)
        if key not in written:
            export = export_litert if fmt == "litert" else export_onnx
            regions = REGIONS if _is_regions(name) else None
            written[key] = export(captioners(name), str(root / f"{fmt}-{name}-{beam_size}"), beam_size, STEPS,
                                  regions=regions)
        return written[key]

    return get


def _assert_tensorflows_tokens(path, captioner, beam_size):
    from tfcaption.export.portable_runtime import PortableBackend

    backend, inputs = PortableBackend(path), _inputs(captioner)
    for data, expected in zip(inputs, _tensorflow_tokens(captioner, beam_size, inputs)):
        out = backend.tokens(data)
        assert out["tokens"].shape == (beam_size, STEPS)
        np.testing.assert_array_equal(out["tokens"], expected)


@pytest.mark.parametrize("name, beam_size", LITERT)
def test_every_preset_converts_to_builtin_litert_ops_with_tensorflows_tokens(files, captioners, name, beam_size):
    from tfcaption.export.litert import builtin_check

    path = files("litert", name, beam_size)
    with open(path, "rb") as f:
        builtin_check(f.read())
    _assert_tensorflows_tokens(path, captioners(name), beam_size)


@pytest.mark.parametrize("name", ONNX)
def test_each_op_family_converts_to_onnx_with_tensorflows_tokens(files, captioners, name):
    _assert_tensorflows_tokens(files("onnx", name, 2), captioners(name), 2)


def test_a_region_file_takes_float_features_with_the_region_count_fixed_at_export(files):
    path = files("litert", "m2_regions", 2)
    with open(os.path.join(os.path.dirname(path), "metadata.json")) as f:
        metadata = json.load(f)
    assert metadata["input"]["name"] == "features" and metadata["input"]["dtype"] == "float32"
    assert metadata["input"]["shape"] == [1, REGIONS, FEATURE_DIM]
    assert (metadata["input"]["regions"], metadata["input"]["feature_dim"]) == (REGIONS, FEATURE_DIM)
    assert "image_size" not in metadata and metadata["image_encoder"]["input"] == "features"


def test_fewer_regions_are_zero_padded_and_more_than_the_files_are_one_line(files, captioners):
    import tfcaption
    from tfcaption.export.portable_runtime import PortableBackend

    path = files("litert", "m2_regions", 2)
    short, full = _inputs(captioners("m2_regions"))
    backend = PortableBackend(path)
    padded = np.concatenate([short, np.zeros((REGIONS - len(short), FEATURE_DIM), np.float32)])
    np.testing.assert_array_equal(backend.tokens(short)["tokens"], backend.tokens(padded)["tokens"])
    # a batch zero-padded past the file's count (a longer image beside it) keeps its tokens
    np.testing.assert_array_equal(backend.tokens(np.concatenate([padded, np.zeros((2, FEATURE_DIM))]))["tokens"],
                                  backend.tokens(short)["tokens"])
    with pytest.raises(ValueError, match=f"takes at most {REGIONS} regions per image, fixed at export; got 6"):
        backend.tokens(np.ones((6, FEATURE_DIM), np.float32))
    with pytest.raises(ValueError, match=r"takes region features \(regions, 12\); got shape \(3, 4\)"):
        backend.tokens(np.ones((3, 4), np.float32))
    results = tfcaption.load(path).caption([short, full])
    vocab = captioners("m2_regions").preprocessor.vocabulary
    assert [r["caption"] for r in results] == [vocab.decode(backend.tokens(x)["tokens"][0]) for x in (short, full)]


@needs_h5py
def test_tfcaption_caption_reads_a_features_file_for_a_region_file_and_refuses_the_wrong_input(
        files, captioners, tmp_path, capsys):
    import tfcaption
    from tfcaption.cli import caption as caption_cli

    arrays = _inputs(captioners("m2_regions"))
    h5 = tmp_path / "detections.hdf5"
    with h5py.File(h5, "w") as f:
        for image_id, rows in zip(("7", "9"), arrays):
            f[f"{image_id}_features"] = rows
    path = files("onnx", "m2_regions", 2)
    assert caption_cli.main(["--features", str(h5), "--model", path, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = tfcaption.load(path).caption(arrays)
    assert [r["image_id"] for r in printed] == ["7", "9"]
    assert [r["caption"] for r in printed] == [r["caption"] for r in expected]
    np.testing.assert_allclose([r["score"] for r in printed], [r["score"] for r in expected], rtol=1e-6)
    image = tmp_path / "0.png"
    image.write_bytes(encode(random_rgb(32, 32)))
    for argv, message in (([str(image), "--model", path], "takes region features: give --features FILE.h5"),
                          (["--features", str(h5), "--model", files("litert", "cptr_small", 1)],
                           "--features does not apply to")):
        assert caption_cli.main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_regions_default_to_the_runs_max_regions_and_are_refused_for_pixels(captioners, capsys):
    from tfcaption.cli import export as export_cli
    from tfcaption.config import RunConfig
    from tfcaption.export.portable import pixels_to_tokens, run_input_regions

    config = RunConfig()
    config.data.spec = "features:/data/detections.hdf5?max_regions=36"
    assert run_input_regions(captioners("m2_regions"), config) == 36
    assert run_input_regions(captioners("m2_regions"), config, regions=7) == 7
    config.data.spec = "features:/data/detections.hdf5"
    assert run_input_regions(captioners("m2_regions"), config) == 50
    assert run_input_regions(captioners("cptr_small"), config) is None
    with pytest.raises(ValueError, match="--regions applies to region-feature models"):
        pixels_to_tokens(captioners("cptr_small"), 1, STEPS, regions=5)
    assert export_cli.main(["--regions", "5"]) == 2
    err = capsys.readouterr().err
    assert "--regions does not apply to --format saved_model" in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def blip_run(tmp_path_factory):
    """The imported fixture checkpoint blip_a's run directory (a BLIP run: ViT tower, BERT decoder, its
    normalisation inside)."""
    from tests.helpers.hf_fixture import model_dir
    from tfcaption.interop.hf.import_blip import import_blip

    return import_blip(model_dir("blip_a"), str(tmp_path_factory.mktemp("blip") / "blip_a"))[1].path


@pytest.fixture(scope="module")
def blip(blip_run):
    from tfcaption.models.image_captioner import ImageCaptioner

    return ImageCaptioner.from_preset(blip_run)


@pytest.mark.parametrize("fmt, beam_size", [("litert", 1), ("litert", 2), ("onnx", 2)])
def test_an_imported_blip_run_converts_with_transformers_beam_search_and_tensorflows_tokens(blip, tmp_path, fmt,
                                                                                          beam_size):
    from tfcaption.export.litert import builtin_check, export_litert
    from tfcaption.export.onnx import export_onnx
    from tfcaption.export.portable import read_metadata

    path = (export_litert if fmt == "litert" else export_onnx)(blip, str(tmp_path / "blip"), beam_size, STEPS)
    metadata = read_metadata(path)
    assert metadata["sampler"] == ("greedy" if beam_size == 1 else "generate_beam")
    assert metadata["resample"] == "bicubic"
    if fmt == "litert":
        with open(path, "rb") as f:
            builtin_check(f.read())
    _assert_tensorflows_tokens(path, blip, beam_size)


def test_full_int8_is_refused_in_one_line_for_a_region_model_before_reading_any_data(captioners):
    from tfcaption.config import RunConfig
    from tfcaption.export.litert import export_run_litert

    with pytest.raises(ValueError, match=r"^--quantize int8 calibrates on images; this region-feature model reads "
                                         r"detector features[^\n]*dynamic_int8\.$"):
        export_run_litert(captioners("m2_regions"), RunConfig(), "/nonexistent/int8", quantize="int8")


@pytest.fixture(scope="module")
def calibration_folder(tmp_path_factory):
    """Six PNGs of varied sizes and, sorted among them, a file that is no image and a folder: a user's photo
    folder."""
    folder = tmp_path_factory.mktemp("calibration")
    for i in range(6):
        (folder / f"{i}.png").write_bytes(encode(random_rgb(40 + 4 * i, 48, seed=20 + i)))
    (folder / "2b.jpg").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("not an image, and no image suffix: not read")
    (folder / "album.png").mkdir()  # a folder, whatever its name: not read
    return folder


INT8_PRESETS = sorted(name for name in PRESETS if not _is_regions(name))


@pytest.mark.parametrize("name", INT8_PRESETS + ["blip"])
def test_every_pixel_preset_and_an_imported_blip_convert_to_full_int8_with_builtin_int8_kernels(
        captioners, blip, calibration_folder, tmp_path, capsys, name):
    from tfcaption.config import RunConfig
    from tfcaption.export.int8 import calibration_pixels
    from tfcaption.export.litert import builtin_check, export_litert, operator_names
    from tfcaption.export.portable_runtime import PortableBackend

    captioner = blip if name == "blip" else captioners(name)
    pixels = calibration_pixels(captioner, RunConfig(), 5, str(calibration_folder))
    assert "skipped 1 undecodable file(s)" in capsys.readouterr().err
    height, width = pixels.shape[1:3]
    assert pixels.shape == (5, height, width, 3) and pixels.dtype == np.uint8
    path = export_litert(captioner, str(tmp_path / name), 2, STEPS, quantize="int8", calibration_pixels=pixels)
    with open(path, "rb") as f:
        content = f.read()
    assert {"WHILE", "QUANTIZE", "DEQUANTIZE"} <= set(operator_names(content)) and builtin_check(content) is content
    vocab_size = captioner.preprocessor.vocabulary_size
    for data in _inputs(captioner):
        out = PortableBackend(path).tokens(data)
        assert out["tokens"].shape == (2, STEPS) and np.all((out["tokens"] >= 0) & (out["tokens"] < vocab_size))
        assert np.all(np.isfinite(out["scores"]))


def test_an_imported_run_calibrates_full_int8_on_calibration_data_and_without_it_is_one_line(
        blip_run, calibration_folder, tmp_path, capsys):
    from tfcaption.cli import export as export_cli
    from tfcaption.export.portable_runtime import PortableBackend

    common = ["--model", blip_run, "--format", "litert", "--quantize", "int8"]
    assert export_cli.main([*common, "--output", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "this run has no dataset (an imported run): give --calibration-data" in err
    assert len(err.strip().splitlines()) == 1
    for source, message in ((tmp_path / "missing", "no such folder"), (tmp_path, "no decodable images")):
        assert export_cli.main([*common, "--calibration-data", str(source), "--output", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert f"--calibration-data {source}: {message}" in err and len(err.strip().splitlines()) == 1
    pattern = str(calibration_folder / "*.png")  # album.png, a folder, is left out
    assert export_cli.main([*common, "--calibration-data", pattern, "--calibration-images", "3", "--beam-size", "1",
                            "--max-steps", str(STEPS), "--output", str(tmp_path / "int8")]) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    assert PortableBackend(path).tokens(encode(random_rgb(seed=3)))["tokens"].shape == (1, STEPS)
