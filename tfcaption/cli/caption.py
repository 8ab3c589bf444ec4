"""tfcaption-caption: print a caption for each image file, from a SavedModel or a run directory."""

import argparse
import glob
import json
import sys

from tfcaption.cli.common import one_line_errors, quiet_tensorflow

PROGRAM = "tfcaption-caption"


def build_parser():
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("images", nargs="*",
                        help="image files or glob patterns; with --features, image ids (default: all in the file)")
    parser.add_argument("--model", default="runs/shapes-small",
                        help="SavedModel directory (savedmodel/<name>[/<version>]) or run directory")
    parser.add_argument("--beam-size", type=int, default=None, help="for run directories")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.add_argument("--features", metavar="FILE.h5",
                        help="caption precomputed region features ('<image_id>_features' datasets, e.g. the M2 "
                             "release's coco_detections.hdf5) with a region-feature run directory as --model")
    parser.add_argument("--all-beams", action="store_true", help="with --features: every beam, best first")
    parser.add_argument("--reference-mode", action="store_true",
                        help="with --features: the released beam-search loop (fixed steps, 0 after <eos>)")
    parser.add_argument("--batch-size", type=int, default=50, help="with --features: images per decoding call")
    return parser


def expand(patterns):
    paths = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        paths.extend(matches or [pattern])
    return paths


@one_line_errors(PROGRAM)
def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    if args.features:
        return caption_feature_file(args)
    if not args.images:
        raise ValueError("give image files or glob patterns (or --features FILE.h5).")
    from tfcaption.inference import CaptionPredictor, ImageError, check_image, read_image_bytes

    predictor = CaptionPredictor(args.model, beam_size=args.beam_size)
    good, failures = [], 0
    for path in expand(args.images):
        try:
            data = read_image_bytes(path)
            check_image(data, path)
            good.append((path, data))
        except (ImageError, OSError) as error:
            failures += 1
            print(f"{PROGRAM}: error: {error}", file=sys.stderr)
    results = []
    if good:
        outputs = predictor.caption([data for _, data in good])
        results = [{"image": path, **output} for (path, _), output in zip(good, outputs)]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            print(f"{result['image']}: {result['caption']}")
    return 1 if failures else 0


def caption_feature_file(args):
    from tfcaption.region_features import caption_features, format_captions
    from tfcaption.data.features import FeaturesNotFoundError

    try:
        results = caption_features(args.model, args.features, image_ids=args.images or None,
                                   beam_size=args.beam_size, all_beams=args.all_beams, batch_size=args.batch_size,
                                   reference_mode=args.reference_mode)
    except FeaturesNotFoundError as error:  # a KeyError: give it the one-line treatment of ValueErrors
        raise ValueError(str(error)) from None
    print(json.dumps(results, indent=2) if args.json else format_captions(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
