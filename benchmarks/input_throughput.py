"""Input pipeline throughput: decoded and resized images per second from prepared shards, 224x224 output.

Builds a folder of COCO-sized photos (640x480 JPEG, quality 90, 5 captions each), prepares it twice with
tfcaption-prepare's library call (originals, and downscaled to a longer side of 320 so the short side
stays above 224), and times on each:

- prepare: images/s checked and written by `prepare_dataset` (all CPU threads);
- decode+resize: `eval_dataset` at 224x224, images/s (one decode per image, as in evaluation);
- training pipeline: `train_dataset` at 224x224, batch 64, flip on, pairs/s and images/s.

Prints a table and writes JSON (default benchmarks/results/input_throughput.json).

    python benchmarks/input_throughput.py --images 1024
"""

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from report import write_report  # noqa: E402  (this folder)
from tfcaption.data import pipeline  # noqa: E402
from tfcaption.data.prepare import prepare_dataset  # noqa: E402
from tfcaption.data.sources import open_source  # noqa: E402
from tfcaption.data.tokenizer import Vocabulary  # noqa: E402

CAPTIONS = ["a photo of a thing", "something on a table", "an object in a room", "a picture of stuff",
            "a view of an item"]


def write_photos(folder, count, size=(480, 640), seed=0):
    """Photo-like JPEGs (smooth shading, edges and sensor noise compress like real photos) + captions.csv."""
    rng = np.random.default_rng(seed)
    h, w = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rows = ["image,caption,split"]
    for i in range(count):
        image = rng.uniform(30, 220, 3) + 40 * np.sin(x[..., None] / rng.uniform(20, 80) + rng.uniform(0, 6, 3))
        for _ in range(4):
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(30, 150)
            image[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
        image += rng.normal(0, 8, image.shape)
        name = f"{i:06d}.jpg"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(os.path.join(folder, name), quality=90)
        rows += [f"{name},{c},train" for c in CAPTIONS]
    with open(os.path.join(folder, "captions.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")


def rate(dataset, count_fn, warmup=1):
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    started, total = time.perf_counter(), 0
    for element in iterator:
        total += count_fn(element)
    return total / (time.perf_counter() - started)


def measure(data_dir, image_size, batch_size, epochs):
    vocab = Vocabulary.build(CAPTIONS)
    eval_rate = rate(pipeline.eval_dataset(data_dir, "train", batch_size, image_size),
                     lambda b: int(b["images"].shape[0]))
    train = pipeline.train_dataset(data_dir, "train", vocab, batch_size, 20, image_size, augment_flip=True,
                                   repeat=True).take(epochs * 5 * int(manifest_images(data_dir)) // batch_size)
    pairs = rate(train, lambda b: int(b["tokens"].shape[0]))
    return {"decode_resize_images_per_s": eval_rate, "train_pairs_per_s": pairs,
            "train_images_per_s": pairs / len(CAPTIONS)}


def manifest_images(data_dir):
    with tf.io.gfile.GFile(os.path.join(data_dir, "manifest.json")) as f:
        return json.load(f)["splits"]["train"]["images"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-image-side", type=int, default=320)
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "input_throughput.json"))
    args = parser.parse_args()

    results = {"images": args.images, "source_image": "640x480 JPEG q90", "output_size": args.image_size,
               "batch_size": args.batch_size, "cpu_count": os.cpu_count(), "rows": []}
    with tempfile.TemporaryDirectory() as root:
        photos = os.path.join(root, "photos")
        os.makedirs(photos)
        write_photos(photos, args.images)
        for label, side in (("original 640x480", None), (f"max side {args.max_image_side}", args.max_image_side)):
            out = os.path.join(root, f"prepared-{side or 'original'}")
            started = time.perf_counter()
            prepare_dataset(open_source(f"folder:{photos}"), out, images_per_shard=256, max_image_side=side,
                            verbose=False)
            prepare_rate = args.images / (time.perf_counter() - started)
            row = {"stored": label, "prepare_images_per_s": prepare_rate,
                   "shard_megabytes": sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out)
                                          if n.endswith(".tfrecord")) / 1e6}
            row.update(measure(out, args.image_size, args.batch_size, args.epochs))
            results["rows"].append(row)

    header = f"{'stored images':<20}{'shards MB':>10}{'prepare img/s':>15}{'decode+resize img/s':>21}" \
             f"{'train pairs/s':>15}{'train img/s':>13}"
    print(f"Input pipeline at {args.image_size}x{args.image_size}, {args.images} images, batch {args.batch_size}, "
          f"{os.cpu_count()} CPUs")
    print(header)
    print("-" * len(header))
    for r in results["rows"]:
        print(f"{r['stored']:<20}{r['shard_megabytes']:>10.1f}{r['prepare_images_per_s']:>15.0f}"
              f"{r['decode_resize_images_per_s']:>21.0f}{r['train_pairs_per_s']:>15.0f}{r['train_images_per_s']:>13.0f}")
    write_report(args.output, results)


if __name__ == "__main__":
    main()
