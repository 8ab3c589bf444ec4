"""LiteRT and ONNX exports of the session's tiny trained run (`tiny_run`): the same tokens as TensorFlow and as
the run's SavedModels, built-in LiteRT ops only, quantized files that caption, and the one-line refusals of
what a file cannot do. Each file is written once per module."""

import json
import os

import numpy as np
import pytest

from tests.helpers.exports import encode, random_rgb


@pytest.fixture(scope="module")
def run(tiny_run):
    from tfcaption.training.run_directory import load_run

    return load_run(tiny_run["run"])


@pytest.fixture(scope="module")
def images():
    """Encoded images: three at the model's 32 x 32 input (no resize), one 50 x 70 JPEG (resized)."""
    return [encode(random_rgb(32, 32, seed=s)) for s in range(3)] + [encode(random_rgb(50, 70, seed=9), "JPEG")]


@pytest.fixture(scope="module")
def files(run, tiny_run, tmp_path_factory):
    """Every file the tests read: litert and onnx, greedy (beam 1) and the run's beam 2 through tfcaption-export,
    the three quantized LiteRT files (beam 2; full int8 through tfcaption-export, calibrated on 8 validation
    images), and a LiteRT file that samples (top-p 0.9, temperature 1.5)."""
    from tfcaption.cli import export as export_cli
    from tfcaption.export.litert import export_litert
    from tfcaption.export.onnx import export_onnx

    captioner, run_config = run
    root = tmp_path_factory.mktemp("portable")
    steps = run_config.data.max_decode_steps
    paths = {
        ("litert", 1): export_litert(captioner, str(root / "litert-greedy"), beam_size=1, max_steps=steps),
        ("onnx", 1): export_onnx(captioner, str(root / "onnx-greedy"), beam_size=1, max_steps=steps),
        ("float16", 2): export_litert(captioner, str(root / "float16"), beam_size=2, max_steps=steps,
                                      quantize="float16"),
        ("dynamic_int8", 2): export_litert(captioner, str(root / "int8"), beam_size=2, max_steps=steps,
                                           quantize="dynamic_int8"),
    }
    for fmt in ("litert", "onnx"):
        output = root / f"{fmt}-beam"
        assert export_cli.main(["--model", tiny_run["run"], "--format", fmt, "--output", str(output)]) == 0
        paths[(fmt, 2)] = str(output / ("model.tflite" if fmt == "litert" else "model.onnx"))
    output = root / "full_int8"
    assert export_cli.main(["--model", tiny_run["run"], "--format", "litert", "--output", str(output), "--quantize",
                            "int8", "--calibration-images", "8"]) == 0
    paths[("int8", 2)] = str(output / "model.tflite")
    output = root / "top_p"
    assert export_cli.main(["--model", tiny_run["run"], "--format", "litert", "--output", str(output), "--sampler",
                            "top_p", "--top-p", "0.9", "--temperature", "1.5"]) == 0
    paths[("top_p", 1)] = str(output / "model.tflite")
    return paths


@pytest.fixture(scope="module")
def tensorflow_tokens(run, images):
    """The exported function run by TensorFlow on the same uint8 pixels, per beam size: tokens [k, T] per image."""
    import tensorflow as tf

    from tfcaption.export.portable import image_pixels, pixels_to_tokens

    captioner, run_config = run
    size = captioner.backbone.image_encoder.image_size
    tokens = {}
    for beam_size in (1, 2):
        function = pixels_to_tokens(captioner, beam_size, run_config.data.max_decode_steps)
        tokens[beam_size] = [function(tf.constant(image_pixels(data, size)[None]))["tokens"].numpy()[0]
                             for data in images]
    return tokens


@pytest.fixture(scope="module")
def saved_model_outputs(tiny_run, tiny_run_greedy_export, images):
    """serving_default's best tokens and captions per beam size (the run's export has beam size 2)."""
    import tensorflow as tf

    outputs = {}
    for beam_size, path in ((1, tiny_run_greedy_export), (2, tiny_run["export"])):
        out = tf.saved_model.load(path).signatures["serving_default"](image_bytes=tf.constant(images))
        outputs[beam_size] = {"tokens": out["tokens"].numpy(),
                              "captions": [c.decode("utf-8") for c in out["caption"].numpy()]}
    return outputs


@pytest.mark.parametrize("fmt", ["litert", "onnx"])
@pytest.mark.parametrize("beam_size", [1, 2])
def test_every_beam_of_the_file_equals_tensorflows_tokens_on_the_same_pixels(files, tensorflow_tokens, images, fmt,
                                                                            beam_size):
    from tfcaption.export.portable_runtime import PortableBackend

    backend = PortableBackend(files[(fmt, beam_size)])
    for data, expected in zip(images, tensorflow_tokens[beam_size]):
        out = backend.tokens(data)
        assert out["tokens"].dtype == np.int32 and out["scores"].dtype == np.float32
        assert out["tokens"].shape == expected.shape == (beam_size, backend.metadata["max_steps"])
        np.testing.assert_array_equal(out["tokens"], expected)


@pytest.mark.parametrize("fmt", ["litert", "onnx"])
@pytest.mark.parametrize("beam_size", [1, 2])
def test_load_gives_the_saved_models_tokens_and_captions_on_images_at_the_input_size(files, saved_model_outputs,
                                                                                    images, fmt, beam_size):
    import tfcaption
    from tfcaption.export.portable_runtime import PortableBackend

    path, expected = files[(fmt, beam_size)], saved_model_outputs[beam_size]
    backend = PortableBackend(path)
    for data, tokens in zip(images[:3], expected["tokens"][:3]):
        np.testing.assert_array_equal(backend.tokens(data)["tokens"][0], tokens)
    results = tfcaption.load(path).caption(images[:3])
    assert [r["caption"] for r in results] == expected["captions"][:3]


def test_the_litert_file_holds_litert_builtin_operators_only_with_the_loop_inside(files):
    from tfcaption.export.litert import builtin_check, operator_names

    with open(files[("litert", 2)], "rb") as f:
        content = f.read()
    names = operator_names(content)
    assert "WHILE" in names and "TOPK_V2" in names  # beam search inside the file
    assert not [name for name in names if name.startswith("Flex") or name == "CUSTOM"]
    assert builtin_check(content) is content


def test_metadata_and_vocab_beside_the_file_describe_its_input_outputs_and_decoding(files, run):
    captioner, run_config = run
    directory = os.path.dirname(files[("litert", 2)])
    assert sorted(os.listdir(directory)) == ["metadata.json", "model.tflite", "vocab.txt"]
    with open(os.path.join(directory, "metadata.json")) as f:
        metadata = json.load(f)
    steps = run_config.data.max_decode_steps
    assert metadata["input"]["name"] == "pixels" and metadata["input"]["dtype"] == "uint8"
    assert metadata["input"]["shape"] == [1, 32, 32, 3] and metadata["image_size"] == [32, 32]
    assert metadata["outputs"] == {"tokens": {"dtype": "int32", "shape": [1, 2, steps]},
                                   "scores": {"dtype": "float32", "shape": [1, 2]}}
    assert (metadata["sampler"], metadata["beam_size"], metadata["max_steps"]) == ("beam", 2, steps)
    assert metadata["special_ids"] == {"pad_id": 1, "bos_id": 2, "eos_id": 3}
    assert metadata["tokenizer"] == "word" and metadata["quantize"] is None
    with open(os.path.join(directory, "vocab.txt")) as f:
        assert f.read().splitlines() == captioner.preprocessor.vocabulary.tokens


@pytest.mark.parametrize("mode", ["float16", "dynamic_int8", "int8"])
def test_quantized_files_are_smaller_and_caption_every_image(files, images, mode):
    import tfcaption

    path = files[(mode, 2)]
    assert os.path.getsize(path) < 0.8 * os.path.getsize(files[("litert", 2)])
    with open(os.path.join(os.path.dirname(path), "metadata.json")) as f:
        assert json.load(f)["quantize"] == mode
    results = tfcaption.load(path).caption(images)
    assert len(results) == len(images) and all(np.isfinite(r["score"]) and r["score"] < 0 for r in results)


def test_the_full_int8_file_holds_builtin_int8_kernels_and_its_captions_are_near_float32s_best(files, run,
                                                                                              tensorflow_tokens,
                                                                                              images):
    """The int8 file's best caption for each image is float32's, or one the float32 model scores within 1 nat
    of float32's best: the barely trained tiny run has near ties everywhere, where int8's rounding may choose
    the other caption; a broken int8 file (a mask quantized away) scores many nats lower."""
    import tensorflow as tf

    from tfcaption.export.litert import builtin_check, operator_names
    from tfcaption.export.portable import image_pixels
    from tfcaption.export.portable_runtime import PortableBackend
    from tfcaption.training.scst import sequence_log_probs

    with open(files[("int8", 2)], "rb") as f:
        content = f.read()
    names = operator_names(content)
    assert {"WHILE", "TOPK_V2", "QUANTIZE", "DEQUANTIZE"} <= set(names) and builtin_check(content) is content
    captioner = run[0]
    backend, size = PortableBackend(files[("int8", 2)]), captioner.backbone.image_encoder.image_size
    vocabulary = captioner.preprocessor.vocabulary
    for data, expected in zip(images, tensorflow_tokens[2]):
        unknown = np.full_like(expected[0], vocabulary.unk_id)  # what a quantized-away mask gave: all <unk>
        tokens = np.stack([expected[0], backend.tokens(data)["tokens"][0], unknown])[None]  # (1, 3, T)
        pixels = tf.cast(image_pixels(data, size)[None], tf.float32)
        log_probs, _ = sequence_log_probs(captioner.backbone, pixels, tokens, training=False, special_ids=vocabulary)
        best, int8, broken = np.asarray(tf.reduce_sum(log_probs, -1))[0]
        assert int8 >= best - 1.0, f"int8's caption scores {int8:.3f} under float32, float32's best {best:.3f}"
        assert broken < best - 1.0  # the margin tells them apart


@pytest.mark.parametrize("fmt", ["litert", "onnx"])
def test_tfcaption_caption_prints_the_saved_models_captions_for_the_file(files, saved_model_outputs, images, fmt,
                                                                        tmp_path, capsys):
    from tfcaption.cli import caption as caption_cli

    paths = []
    for i, data in enumerate(images[:3]):
        paths.append(str(tmp_path / f"{i}.png"))
        with open(paths[-1], "wb") as f:
            f.write(data)
    assert caption_cli.main(paths + ["--model", files[(fmt, 2)], "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["caption"] for r in printed] == saved_model_outputs[2]["captions"][:3]


@pytest.mark.parametrize("flags, message", [
    (["--attention", "out.png"], "--attention does not apply to a litert file"),
    (["--beam-size", "3"], "decodes with beam size 2, fixed at export; got beam size 3"),
    (["--sampler", "top_p", "--top-p", "0.9"], "decodes with beam size 2, fixed at export; got TopPSampler"),
    (["--seed", "3"], "takes no seed"),
    (["--max-steps", "2"], "fixed at export; got a caption length of 2"),
])
def test_caption_options_the_file_cannot_honour_are_one_line_and_exit_2(files, images, tmp_path, capsys, flags,
                                                                        message):
    from tfcaption.cli import caption as caption_cli

    image = tmp_path / "0.png"
    image.write_bytes(images[0])
    assert caption_cli.main([str(image), "--model", files[("litert", 2)], *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_load_accepts_the_files_own_beam_size_and_refuses_another(files):
    import tfcaption

    assert tfcaption.load(files[("onnx", 2)], beam_size=2).backend.metadata["beam_size"] == 2
    assert tfcaption.load(files[("litert", 1)], sampler="greedy").backend.metadata["beam_size"] == 1
    with pytest.raises(ValueError, match="beam size 1, fixed at export; got beam size 3"):
        tfcaption.load(files[("litert", 1)], beam_size=3)


@pytest.mark.parametrize("flags, message", [
    (["--format", "litert", "--quantize", "int4"], "--quantize must be one of float16, dynamic_int8, int8"),
    (["--format", "litert", "--calibration-images", "5"], "--calibration-images applies to --quantize int8"),
    (["--format", "litert", "--calibration-data", "photos"], "--calibration-data applies to --quantize int8"),
    (["--format", "litert", "--quantize", "int8", "--calibration-images", "0"],
     "--calibration-images must be an integer >= 1, got 0"),
    (["--format", "onnx", "--quantize", "float16"], "--quantize does not apply to --format onnx"),
    (["--format", "litert", "--max-pixels", "100"], "--max-pixels does not apply to --format litert"),
    (["--output", "somewhere"], "--output does not apply to --format saved_model"),
    (["--format", "onnx", "--sampler", "top_p"], "--sampler does not apply to --format onnx"),
    (["--format", "litert", "--sampler", "greedy"], "GreedySampler is not a random sampler"),
    (["--format", "litert", "--sampler", "top_k", "--beam-size", "2"], "--beam-size applies to the search"),
])
def test_export_flags_the_format_cannot_use_are_one_line_and_exit_2(tiny_run, capsys, flags, message):
    from tfcaption.cli import export as export_cli

    assert export_cli.main(["--model", tiny_run["run"], *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_export_refuses_a_tf_serving_directory_and_an_existing_file(run, files, tiny_run):
    from tfcaption.export.litert import export_litert

    captioner, _ = run
    with pytest.raises(ValueError, match="inside the TF Serving model directory"):
        export_litert(captioner, os.path.join(os.path.dirname(tiny_run["export"]), "litert"))
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        export_litert(captioner, os.path.dirname(files[("litert", 2)]))


def test_a_file_without_its_metadata_is_one_line(files, tmp_path, capsys):
    from tfcaption.cli import caption as caption_cli

    lone = tmp_path / "model.tflite"
    with open(files[("litert", 1)], "rb") as f:
        lone.write_bytes(f.read())
    image = tmp_path / "0.png"
    image.write_bytes(encode(random_rgb(32, 32)))
    assert caption_cli.main([str(image), "--model", str(lone)]) == 2
    err = capsys.readouterr().err
    assert "no metadata.json beside it" in err and len(err.strip().splitlines()) == 1


def test_the_sampling_file_draws_tensorflows_tokens_for_each_seed(files, run, images):
    import tensorflow as tf

    from tfcaption import samplers
    from tfcaption.export.portable import image_pixels, pixels_to_tokens
    from tfcaption.export.portable_runtime import PortableBackend

    captioner, run_config = run
    sampler = samplers.TopPSampler(p=0.9, temperature=1.5)
    function = pixels_to_tokens(captioner, 1, run_config.data.max_decode_steps, sampler)
    backend = PortableBackend(files[("top_p", 1)])
    assert backend.metadata["sampler"] == "top_p" and backend.metadata["seed"]["dtype"] == "int32"
    for seed in (1, 2, -5):
        for data in images:
            expected = function(tf.constant(image_pixels(data, 32)[None]), tf.constant([seed], tf.int32))
            np.testing.assert_array_equal(backend.tokens(data, seed)["tokens"], expected["tokens"].numpy()[0])


def test_seed_alone_samples_with_the_files_sampler_and_repeats(files, images, tmp_path, capsys):
    import tfcaption
    from tfcaption import samplers
    from tfcaption.cli import caption as caption_cli

    paths = []
    for i, data in enumerate(images):
        paths.append(str(tmp_path / f"{i}.png"))
        with open(paths[-1], "wb") as f:
            f.write(data)
    printed = []
    for _ in range(2):
        assert caption_cli.main(paths + ["--model", files[("top_p", 1)], "--seed", "3", "--json"]) == 0
        printed.append([r["caption"] for r in json.loads(capsys.readouterr().out)])
    expected = tfcaption.load(files[("top_p", 1)], sampler=samplers.TopPSampler(p=0.9, temperature=1.5, seed=3))
    assert printed[0] == printed[1] == [r["caption"] for r in expected.caption(images)]
    with pytest.raises(ValueError, match="samples with top_p"):
        tfcaption.load(files[("top_p", 1)], sampler=samplers.TopPSampler(p=0.5, seed=3))
