"""tfcaption-prepare: read a caption source once into sharded TFRecords plus a manifest."""

import argparse
import sys

from tfcaption.cli.common import ArgumentParser, one_line_errors, quiet_tensorflow

PROGRAM = "tfcaption-prepare"

EPILOG = """sources:
  coco:ROOT                     COCO layout: ROOT/annotations/captions_train2014.json + ROOT/train2014/
  coco:FILE.json?images=DIR     one COCO captions file and its image folder
  karpathy:FILE.json?images=ROOT  Karpathy split file (dataset_coco.json / dataset_flickr8k.json / ...);
                                restval is folded into train (restval=keep to keep it apart)
  tfds:coco_captions            TensorFlow Datasets (downloads and prepares it through TFDS first)
  folder:DIR?captions=FILE      images under DIR + a CSV / JSON Lines table: image,caption[,split]
  features:FILE.hdf5?captions=dataset_coco.json
                                precomputed region features (<image id>_features datasets, M2's layout)
                                + Karpathy or COCO captions, for the m2_regions / m2_reference presets

OUT_DIR may be a local path or a tf.io.gfile URL (gs://bucket/data/coco). An interrupted run resumes
where it stopped when run again with the same arguments."""


def build_parser():
    parser = ArgumentParser(prog=PROGRAM, description=__doc__.split(":", 1)[1].strip(), epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="source spec, e.g. karpathy:data/dataset_coco.json?images=data/coco")
    parser.add_argument("out_dir", help="output directory for the shards, manifest.json and skipped.jsonl")
    parser.add_argument("--images-per-shard", type=int, default=1000,
                        help="images per TFRecord shard, the unit of parallel work and resumption (default 1000)")
    parser.add_argument("--workers", type=int, default=None,
                        help="threads reading and checking images (default: 2 x CPU cores, at most 16)")
    parser.add_argument("--max-image-side", type=int, default=None, metavar="PIXELS",
                        help="downscale images whose longer side is larger and store them as JPEG (e.g. 384 "
                             "for 224-pixel training: smaller shards, faster input pipeline)")
    parser.add_argument("--max-pixels", type=int, default=None,
                        help="skip images with more pixels than this (default 40,000,000)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace another dataset or unfinished preparation found in OUT_DIR")
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    return parser


@one_line_errors(PROGRAM)
def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    from tfcaption.data.pipeline import DEFAULT_MAX_PIXELS
    from tfcaption.data.prepare import prepare_dataset
    from tfcaption.data.sources import open_source

    source = open_source(args.source)
    try:
        prepare_dataset(
            source, args.out_dir, images_per_shard=args.images_per_shard, workers=args.workers,
            max_image_side=args.max_image_side, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
            overwrite=args.overwrite, verbose=not args.quiet,
        )
    except KeyboardInterrupt:
        print(f"{PROGRAM}: interrupted; the finished shards are kept, and the same command resumes after them",
              file=sys.stderr)
        return 130
    if not args.quiet:
        print(f"\nTrain on it:  tfcaption-train --data {args.out_dir} --output-dir runs/NAME")
    return 0


if __name__ == "__main__":
    sys.exit(main())
