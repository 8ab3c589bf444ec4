"""tfcaption-caption: print a caption for each image file, from a SavedModel, a run directory, or a LiteRT /
ONNX file written by tfcaption-export --format."""

import glob
import json
import os
import sys

from tfcaption.cli.common import ArgumentParser, one_line_errors, quiet_tensorflow
from tfcaption.cli.sampling import add_sampler_arguments, max_steps_from_args, sampler_from_args

PROGRAM = "tfcaption-caption"


def build_parser():
    parser = ArgumentParser(prog=PROGRAM, description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("images", nargs="*",
                        help="image files or glob patterns; with --features, image ids (default: all in the file)")
    parser.add_argument("--model", default="runs/shapes-small",
                        help="SavedModel directory (savedmodel/<name>[/<version>]), run directory, or model.tflite / "
                             "model.onnx (with metadata.json and vocab.txt beside it)")
    parser.add_argument("--beam-size", type=int, default=None,
                        help="for run directories: K beams of the run's beam search (decode.beam_search: M2's, or "
                             "transformers' generate() for an imported BLIP run); 1 is greedy")
    parser.add_argument("--prompt", metavar="TEXT",
                        help="for run directories: every caption continues TEXT (BLIP's conditional captioning: "
                             "'a picture of'), tokenized by the run's tokenizer; the captions include it")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list (image, caption, score; for run directories the token ids)")
    parser.add_argument("--features", metavar="FILE.h5",
                        help="caption precomputed region features ('<image_id>_features' datasets, e.g. the M2 "
                             "release's coco_detections.hdf5) with a region-feature run directory, or its LiteRT / ONNX "
                             "file, as --model")
    parser.add_argument("--all-beams", action="store_true", help="with --features: every beam, best first")
    parser.add_argument("--reference-mode", action="store_true",
                        help="with --features: the released beam-search loop (fixed steps, 0 after <eos>)")
    parser.add_argument("--batch-size", type=int, default=50, help="with --features: images per decoding call")
    parser.add_argument("--attention", metavar="OUT.png",
                        help="draw each image with an attention map per word (decoded as the captions are); with several "
                             "images writes OUT-<stem>.png per image")
    parser.add_argument("--gates", action="store_true",
                        help="with --attention: add each word's meshed gate weight per encoder level")
    add_sampler_arguments(parser)
    return parser


def figure_paths(image_paths, out):
    """Where each image's attention figure goes: OUT itself for one image, OUT-<stem>.png for several.

    Two images with the same file stem (a/x.png, b/x.png) get -2, -3... so no figure overwrites another.
    """
    if len(image_paths) == 1:
        return [out]
    base, ext = os.path.splitext(out)
    ext = ext or ".png"
    paths, seen = [], {}
    for image_path in image_paths:
        stem = os.path.splitext(os.path.basename(image_path))[0]
        seen[stem] = seen.get(stem, 0) + 1
        suffix = f"-{seen[stem]}" if seen[stem] > 1 else ""
        paths.append(f"{base}-{stem}{suffix}{ext}")
    return paths


def expand(patterns):
    paths = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        paths.extend(matches or [pattern])
    return paths


def _plain_beam(sampler):
    """Whether `sampler` is a beam search with default settings (all --features decoding takes)."""
    from tfcaption.samplers import BeamSampler

    return isinstance(sampler, BeamSampler) and sampler.get_config() == BeamSampler(sampler.num_beams).get_config()


def _check_portable_flags(args):
    """One line for a flag a LiteRT or ONNX file cannot honour (its decoding is fixed at export; it returns
    tokens, no attention); another beam size, sampler or length is refused when the file is opened."""
    from tfcaption.export.portable_runtime import portable_format

    fmt = portable_format(args.model)
    if fmt is None:
        return
    from tfcaption.export.portable import FEATURES_NAME, read_metadata

    takes_features = read_metadata(args.model)["input"]["name"] == FEATURES_NAME
    if takes_features != bool(args.features):
        raise ValueError(f"{args.model} takes region features: give --features FILE.h5 (and image ids)." if
                         takes_features else f"--features does not apply to {args.model}: it takes pixels.")
    for flag, given in (("--attention", args.attention), ("--gates", args.gates),
                        ("--all-beams", args.all_beams), ("--reference-mode", args.reference_mode),
                        ("--prompt", args.prompt is not None)):
        if given:
            raise ValueError(f"{flag} does not apply to a {fmt} file ({args.model}): it returns the tokens of the "
                             "decoding fixed at export; use the run directory or a SavedModel.")


def _file_sampler_with_seed(args):
    """For `--seed` alone on a LiteRT file that samples: the file's own sampler with that seed (None otherwise)."""
    from tfcaption.cli.sampling import SAMPLER_FLAGS, _number
    from tfcaption.export.portable_runtime import file_sampler, portable_format

    if args.seed is None or portable_format(args.model) is None:
        return None
    if any(getattr(args, flag) is not None for flag in SAMPLER_FLAGS if flag != "seed"):
        return None
    return file_sampler(args.model, _number("seed", args.seed, int, lambda v: -2**31 <= v < 2**31, "an int32"))


@one_line_errors(PROGRAM)
def main(argv=None):
    args = build_parser().parse_args(argv)
    sampler = _file_sampler_with_seed(args) or sampler_from_args(args, args.beam_size)
    max_steps = max_steps_from_args(args)
    quiet_tensorflow()
    _check_portable_flags(args)
    if args.features:
        if args.prompt is not None:
            raise ValueError("--prompt continues captions of images; it does not apply to --features.")
        if args.attention:
            raise ValueError("--attention draws over image pixels; it does not apply to --features.")
        if sampler is not None and not _plain_beam(sampler):
            raise ValueError("--features decodes with beam search (--beam-size); the other sampler flags apply "
                             "to images.")
        return caption_feature_file(args, max_steps)
    if args.gates and not args.attention:
        raise ValueError("--gates adds to the attention figure: give --attention OUT.png too.")
    if args.attention and args.prompt is not None:
        raise ValueError("--attention draws captions decoded without a prompt: leave out --prompt.")
    if not args.images:
        raise ValueError("give image files or glob patterns (or --features FILE.h5).")
    from tfcaption.inference import CaptionPredictor, ImageError, checked_image_bytes

    if sampler is not None:
        predictor = CaptionPredictor(args.model, sampler=sampler, max_length=max_steps, prompt=args.prompt)
    else:
        predictor = CaptionPredictor(args.model, beam_size=args.beam_size, max_length=max_steps, prompt=args.prompt)
    good, failures = [], 0
    for path in expand(args.images):
        try:
            good.append((path, checked_image_bytes(path, path)))
        except (ImageError, OSError) as error:
            failures += 1
            print(f"{PROGRAM}: error: {error}", file=sys.stderr)
    results = []
    if good and args.attention:
        results = caption_with_figures(predictor, good, args.attention, args.gates)
    elif good:
        outputs = predictor.caption([data for _, data in good])
        results = [{"image": path, **output} for (path, _), output in zip(good, outputs)]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            print(f"{result['image']}: {result['caption']}")
            if "attention_figure" in result:
                print(f"  attention figure: {result['attention_figure']}")
    return 1 if failures else 0


def caption_with_figures(predictor, good, out, show_gates):
    """Captions plus one attention figure per image (recorded along each caption); the figure path goes into
    each result."""
    from tfcaption.viz.attention import attention_figure

    directory = os.path.dirname(out)
    if directory and not os.path.isdir(directory):
        raise FileNotFoundError(f"--attention: no such directory: {directory}")
    outputs = predictor.caption_with_attention([data for _, data in good])
    results = []
    for (path, _), output, figure_path in zip(good, outputs, figure_paths([p for p, _ in good], out)):
        attention_figure(output, figure_path, show_gates=show_gates)
        results.append({"image": path, "caption": output["caption"], "score": output["score"],
                        "attention_figure": figure_path})
    return results


def _caption_features_with_file(args, max_steps):
    """`--features` with a LiteRT / ONNX region-feature file: each image's rows, zero-padded to the file's
    regions, one image per call (the file's batch is 1)."""
    from tfcaption.data.region_features import RegionFeatureFile
    from tfcaption.export.portable_runtime import PortableBackend

    backend = PortableBackend(args.model, beam_size=args.beam_size, max_length=max_steps)
    with RegionFeatureFile(args.features, backend.regions) as features:
        ids = [str(i) for i in args.images] or features.image_ids()
        features.require(ids)
        results = []
        for image_id in ids:
            tokens = backend.tokens(features.read_rows(image_id))
            results.append({"image_id": image_id, "caption": backend.vocab.decode(tokens["tokens"][0]),
                            "score": float(tokens["scores"][0])})
    return results


def caption_feature_file(args, max_steps=None):
    from tfcaption.export.portable_runtime import portable_format
    from tfcaption.interop.m2.captioning import caption_features, format_captions
    from tfcaption.interop.m2.features import FeaturesNotFoundError

    try:
        if portable_format(args.model) is not None:
            results = _caption_features_with_file(args, max_steps)
        else:
            results = caption_features(args.model, args.features, image_ids=args.images or None,
                                       beam_size=args.beam_size, all_beams=args.all_beams,
                                       batch_size=args.batch_size, reference_mode=args.reference_mode,
                                       max_steps=max_steps)
    except FeaturesNotFoundError as error:  # a KeyError: give it the one-line treatment of ValueErrors
        raise ValueError(str(error)) from None
    print(json.dumps(results, indent=2) if args.json else format_captions(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
