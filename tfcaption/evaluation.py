"""Evaluating a captioner on dataset splits: decode, score, compare with the blind baseline."""

import json

import tensorflow as tf

from tfcaption.data import pipeline
from tfcaption.data.records import input_kind, load_manifest, read_records
from tfcaption.decoding.captioning import caption_batches
from tfcaption.datasets.shapes.grounding import blind_baseline_caption
from tfcaption.metrics.report import evaluate_results


def training_captions(data_dir, split="train", with_scenes=False):
    """Every reference caption of a split (and each image's scene), without decoding images."""
    captions, scenes = [], []
    dataset = read_records(data_dir, split).map(lambda r: (r["captions"], r["scene"]))
    for refs, scene in dataset.as_numpy_iterator():
        captions.extend(c.decode("utf-8") for c in refs)
        scenes.append(scene.decode("utf-8"))
    return (captions, scenes) if with_scenes else captions


def blind_baseline(data_dir, split="train"):
    """The best caption a model could give without looking at the image (see `blind_baseline_caption`)."""
    captions, scenes = training_captions(data_dir, split, with_scenes=True)
    scenes = [s for s in scenes if s]
    return blind_baseline_caption(captions, scenes[:500] or None)


def evaluation_splits(data_dir, requested, fallback=("test", "val")):
    """The requested splits that the dataset has; if it has none of them, its test (else val) split.

    The default run config asks for shapes' `test` and `novel`; a COCO layout has only `train` and `val`,
    and that is what it is evaluated on then.
    """
    available = [s for s, v in load_manifest(data_dir).get("splits", {}).items() if v.get("images")]
    chosen = [s for s in requested if s in available]
    return chosen or [s for s in fallback if s in available][:1]


def evaluate_splits(captioner, data_dir, splits, blind_caption=None, beam_size=None, max_steps=None,
                    batch_size=100, use_java=None, collapse_repeats=False, jit_compile=True, log=print, sampler=None):
    """Captions each split with a `tfcaption.ImageCaptioner` and scores it, with `sampler` (a
    `tfcaption.samplers.Sampler` or a name) when given, else greedy or the captioner's beam search
    (`ImageCaptioner.default_sampler`: a run's `decode.beam_search`) of `beam_size`.

    `beam_size` and `max_steps` (tokens per caption, <eos> included) default to the captioner's own
    (`beam_size`, `max_length`: a run's `decode.beam_size` and `data.max_decode_steps`).

    Returns `(report, predictions)`: report maps each split to
    `{"model": {...}, "blind_baseline": {...}, "images": n, "skipped_images": k}`;
    predictions maps each split to a list of `{"image_id", "caption", "score"}`.
    Images that cannot be decoded are skipped, counted and reported, never fatal.
    """
    model, vocab = captioner._require_backbone(), captioner.preprocessor.vocabulary
    sampler = sampler if sampler is not None else captioner.default_sampler(beam_size)
    max_steps = max_steps or captioner.max_length
    manifest = load_manifest(data_dir)
    model.check_inputs(input_kind(manifest), data_dir)
    report, predictions = {}, {}
    for split in splits:
        if split not in manifest.get("splits", {}):
            log(f"Skipping split {split!r}: not in {data_dir} (has {', '.join(manifest.get('splits', {}))}).")
            continue
        expected = manifest["splits"][split]["images"]
        results = caption_batches(
            model, vocab, pipeline.eval_dataset(data_dir, split, batch_size, model.image_encoder.image_size,
                                                  model.image_encoder.resample),
            sampler=sampler, max_steps=max_steps,
            jit_compile=jit_compile,
        )
        skipped = expected - len(results)
        if skipped:
            log(f"{split}: skipped {skipped} undecodable image(s) of {expected}.")
        split_report = evaluate_results(results, blind_caption, use_java=use_java, collapse_repeats=collapse_repeats)
        split_report["skipped_images"] = skipped
        report[split] = split_report
        predictions[split] = [{k: r[k] for k in ("image_id", "caption", "score")} for r in results]
    return report, predictions


def report_rows(report):
    """Rows for `format_metrics_table`: `split/model` and, where scored, `split/blind` per split."""
    rows = {}
    for split, split_report in report.items():
        rows[f"{split}/model"] = split_report["model"]
        if "blind_baseline" in split_report:
            rows[f"{split}/blind"] = split_report["blind_baseline"]
    return rows


def write_json(path, value):
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(value, indent=2, sort_keys=True))
