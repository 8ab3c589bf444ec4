"""Captioning and evaluating from precomputed region features: what `--features FILE.h5` runs.

Why this module exists: models on region features (the converted M2 release, or any run with a
`regions` image encoder) take no pixels, so tfcaption-caption and tfcaption-evaluate cannot feed
them images. These two functions are their `--features` path: read the HDF5 file (the release's
`coco_detections.hdf5` layout, see `tfcaption.interop.m2.features`), beam-search every image, and return
plain records (caption) or COCO metrics (evaluate) against Karpathy's split. Reproducing the paper
is then: convert the checkpoint (tfcaption-convert-m2), `evaluate_features(...)` on the test split.

Decoding semantics: by default the beam search stops once every beam has ended and writes <pad>
after <eos>; `reference_mode=True` runs the released code's loop exactly (a fixed number of steps,
0 written after <eos>). Both give the same captions and scores; the reference mode exists to compare
token arrays with the authors' output.
"""

from __future__ import annotations

import numpy as np

from tfcaption.data.records import InputKind
from tfcaption.interop.m2.features import MAX_REGIONS, RegionFeatureFile, load_karpathy_split

METRIC_VARIANTS = {"collapse_repeats": True, "raw": False}


def _trim(tokens, eos_id):
    """Tokens up to and including the first <eos> (what follows it is filler)."""
    tokens = list(tokens)
    return tokens[: tokens.index(eos_id) + 1] if eos_id in tokens else tokens


def _check_model(model, model_dir, feature_dim):
    model.check_inputs(InputKind("features", feature_dim), f"the features (model {model_dir})")


def caption_features(model_dir, features_path, image_ids=None, beam_size=None, all_beams=False, batch_size=50,
                     json_output=True, reference_mode=False, max_steps=None, jit_compile=False, weights="best",
                     max_regions=MAX_REGIONS):
    """Captions images given by their region features in an HDF5 file.

    Args:
        model_dir: a run directory of a region-feature model (e.g. from tfcaption-convert-m2).
        features_path: HDF5 file with `<image_id>_features` datasets (n <= 50 regions, zero-padded
            to 50 here).
        image_ids: the images to caption (str or int ids); None = every `*_features` dataset in
            the file, numeric ids in numeric order. All ids are checked before decoding starts: a
            missing one raises `FeaturesNotFoundError` (a KeyError) naming it and the file.
        beam_size: default the run's `decode.beam_size` (5 for converted M2 checkpoints).
        all_beams: add `"beams"`: every beam, best first, as `{"caption", "tokens", "score"}`
            (`tokens` up to and including <eos>).
        batch_size: images per decoding call (a smaller last batch is padded to this size by
            repeating its last image, so compiled shapes never change; the padding is dropped).
        json_output: True: only JSON types (str ids, float scores, lists of int tokens), ready for
            `json.dumps`. False: numpy values (int32 token arrays, float32 scores) and, per beam,
            the per-token `"log_probs"`, for analysis in Python.
        reference_mode: the released beam-search loop (fixed steps, 0 after <eos>); same captions.
        max_steps: decoding steps, <eos> included; default the run's `data.max_decode_steps`
            (20 for converted M2 checkpoints, as the reference).
        jit_compile: XLA-compile the decoder (worth it on GPU; graph mode otherwise).
        weights: "best", "latest" or a weights file, as `load_run`.
        max_regions: rows per image after zero-padding. Keep 50 for the released model: its encoder
            attends to padding rows too (nothing is masked, as released), so the amount of padding
            changes the captions, and the reference always pads to 50.

    Returns:
        One dict per image, in `image_ids` order: `{"image_id": str, "caption": str, "score": float}`
        (score = sum of token log-probabilities), plus `"beams"` with `all_beams`.
    """
    return _caption(model_dir, features_path, image_ids, beam_size, all_beams, batch_size, json_output,
                    reference_mode, max_steps, jit_compile, weights, max_regions)[0]


def _caption(model_dir, features_path, image_ids, beam_size, all_beams, batch_size, json_output, reference_mode,
             max_steps, jit_compile, weights, max_regions):
    """`caption_features`, also returning the decoding settings it resolved from the run."""
    from tfcaption.decoding.captioning import caption_batches
    from tfcaption.training.run_directory import load_run

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    # The features file is checked first (cheap), so a wrong path or id fails before the model loads.
    with RegionFeatureFile(features_path, max_regions) as features:
        ids = [str(i) for i in image_ids] if image_ids is not None else features.image_ids()
        if not ids:
            raise ValueError("no images to caption: " + ("the list of image ids is empty." if image_ids is not None
                             else f"{features_path} holds no '<image_id>_features' datasets."))
        features.require(ids)
        captioner, run_config = load_run(model_dir, weights=weights)
        model, vocab = captioner.backbone, captioner.preprocessor.vocabulary
        _check_model(model, model_dir, features.feature_dim)
        beam_size = int(beam_size or run_config.decode.beam_size)
        max_steps = int(max_steps or run_config.data.max_decode_steps)
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}.")
        if not 1 <= max_steps <= model.config.max_length:
            raise ValueError(f"max_steps must be in 1..{model.config.max_length} (the model's position table), "
                             f"got {max_steps}.")
        options = {"fill_token": 0, "stop_early": False, "length_penalty": 0.0} if reference_mode else {}
        # At least 2 rows per call: beam_search inside tf.function fails for a batch of exactly one
        # image (its cache's static shape changes in the loop); a repeated row costs little.
        batch_size = max(2, min(batch_size, len(ids)))
        batches = ({"features": array, "image_id": batch_ids} for batch_ids, array in features.batches(ids, batch_size))
        # Beam search even for k = 1: the released loop is a beam search, and reference_mode needs its options.
        decoded = caption_batches(model, vocab, batches, beam_size=beam_size, max_steps=max_steps,
                                  jit_compile=jit_compile, keep_beams=True, pad_to=batch_size, search="beam",
                                  **options)
        results = [_record(r, vocab, vocab.eos_id, all_beams, json_output) for r in decoded]
    return results, {"beam_size": beam_size, "max_steps": max_steps}


def _record(decoded, vocab, eos, all_beams, json_output):
    record = {"image_id": decoded["image_id"], "caption": decoded["caption"],
              "score": decoded["score"] if json_output else decoded["beam_scores"][0]}
    if all_beams:
        record["beams"] = []
        tokens, scores, log_probs = decoded["beam_tokens"], decoded["beam_scores"], decoded["beam_log_probs"]
        for k in range(tokens.shape[0]):
            kept = _trim(tokens[k].tolist(), eos)
            beam = {"caption": vocab.decode(kept)}
            if json_output:
                beam.update(tokens=[int(t) for t in kept], score=float(scores[k]))
            else:
                beam.update(tokens=np.asarray(kept, np.int32), score=scores[k], log_probs=log_probs[k][: len(kept)])
            record["beams"].append(beam)
    return record


def evaluate_features(model_dir, features_path, annotations_path, split="test", beam_size=5, collapse_repeats=None,
                      use_java=None, batch_size=50, max_steps=None, reference_mode=False, jit_compile=False,
                      weights="best", max_regions=MAX_REGIONS):
    """COCO caption metrics of a region-feature model on a Karpathy split, as the M2 paper reports them.

    Every image of the split (`dataset_coco.json`, ids = `cocoid`) is captioned from the features file
    (a missing image is an error, never skipped) and scored against its raw reference captions with
    `caption_metrics` (PTB tokenizer and METEOR through java when available; `use_java=False` for the
    pure-Python path without METEOR).

    Args:
        collapse_repeats: None (default) scores twice and reports both: `"collapse_repeats"`, with
            consecutive repeated words collapsed as the reference evaluation does, and `"raw"`, the
            captions as decoded; True or False computes only that one.
        beam_size: 5 as the reference; None = the run's `decode.beam_size`.
        Other arguments as `caption_features`.

    Returns:
        `{"split", "images", "beam_size", "max_steps", "raw": metrics, "collapse_repeats": metrics,
        "predictions": [{"image_id", "caption", "score"}, ...]}`, metrics as `caption_metrics`
        returns them (fractions; CIDEr-D 1.312 is the paper's 131.2).
    """
    from tfcaption.metrics.coco import caption_metrics

    annotations = load_karpathy_split(annotations_path, split)
    predictions, settings = _caption(model_dir, features_path, annotations.image_ids, beam_size, False, batch_size,
                                     True, reference_mode, max_steps, jit_compile, weights, max_regions)
    candidates = {p["image_id"]: p["caption"] for p in predictions}
    variants = METRIC_VARIANTS if collapse_repeats is None else {
        name: flag for name, flag in METRIC_VARIANTS.items() if flag == bool(collapse_repeats)}
    report = {"split": split, "images": len(predictions), **settings}
    for name, flag in variants.items():
        report[name] = caption_metrics(annotations.references, candidates, use_java=use_java, collapse_repeats=flag)
    report["predictions"] = predictions
    return report


def metrics_rows(report):
    """Rows for `format_metrics_table` from an `evaluate_features` report."""
    return {f"{report['split']}/{name}": report[name] for name in METRIC_VARIANTS if name in report}


def format_captions(results):
    """Plain-text lines for `caption_features` results: `id: caption` (and indented beams)."""
    lines = []
    for result in results:
        lines.append(f"{result['image_id']}: {result['caption']}")
        for beam in result.get("beams", ()):
            lines.append(f"    {float(beam['score']):9.4f}  {beam['caption']}")
    return "\n".join(lines)
