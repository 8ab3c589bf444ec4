"""tfcaption-caption: print a caption for each image file, from a SavedModel or a run directory."""

import argparse
import glob
import json
import sys

from tfcaption.cli.common import one_line_errors, quiet_tensorflow

PROGRAM = "tfcaption-caption"


def build_parser():
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("images", nargs="+", help="image files or glob patterns")
    parser.add_argument("--model", default="runs/shapes-small",
                        help="SavedModel directory (savedmodel/<name>[/<version>]) or run directory")
    parser.add_argument("--beam-size", type=int, default=None, help="for run directories")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
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


if __name__ == "__main__":
    sys.exit(main())
