"""Small datasets in each source layout, written with real JPEG/PNG files and the bad cases preparation must survive.

Every builder returns the directory (or file) to give the source spec plus an ``expected`` dict with the
counts a correct preparation reports: images and captions per split, skipped images and captions by
reason. The counts are written down by hand from the files made here, not computed by the code under test.
"""

import io
import json
import os

import numpy as np
from PIL import Image


def photo(seed, size=(48, 64)):
    """A photo-like RGB image: a smooth colour gradient, a bright disc, and noise."""
    rng = np.random.default_rng(seed)
    h, w = size
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = rng.uniform(40, 200, 3)
    image = base + 60 * np.stack([x, y, x * y], -1) + rng.normal(0, 6, (h, w, 3))
    cy, cx = rng.uniform(0.3, 0.7, 2) * (h, w)
    disc = (np.mgrid[0:h, 0:w][0] - cy) ** 2 + (np.mgrid[0:h, 0:w][1] - cx) ** 2 < (min(h, w) / 5) ** 2
    image[disc] = rng.uniform(0, 255, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(array, fmt, mode=None, **options):
    image = Image.fromarray(array)
    if mode == "I;16":
        image = Image.fromarray((array[..., 0].astype(np.uint16) * 257))
    elif mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _cut(data, fraction):
    """The first part of a file, as a download cut short leaves it."""
    return data[:int(len(data) * fraction)]


# name -> (bytes maker, what preparation does with it)
GOOD = {
    "rgb.jpg": lambda s: encode(photo(s), "JPEG", quality=90),
    "gray.jpg": lambda s: encode(photo(s), "JPEG", "L"),
    "cmyk.jpg": lambda s: encode(photo(s), "JPEG", "CMYK"),
    "rgba.png": lambda s: encode(photo(s), "PNG", "RGBA"),
    "deep.png": lambda s: encode(photo(s), "PNG", "I;16"),
    "palette.png": lambda s: encode(photo(s), "PNG", "P"),
    "photo.webp": lambda s: encode(photo(s), "WEBP"),  # TensorFlow cannot decode it: converted to JPEG
}
BAD = {
    "truncated.jpg": (lambda s: _cut(encode(photo(s), "JPEG", quality=95), 0.6), "truncated_image"),
    "notes.jpg": (lambda s: b"this is a text file, not a JPEG\n", "not_an_image"),
    "empty.png": (lambda s: b"", "empty_file"),
}
# Kept by preparation, keyed by the "FORMAT/MODE" it reports.
GOOD_KINDS = {"rgb.jpg": "JPEG/RGB", "gray.jpg": "JPEG/L", "cmyk.jpg": "JPEG/CMYK", "rgba.png": "PNG/RGBA",
              "deep.png": "PNG/I;16", "palette.png": "PNG/P", "photo.webp": "WEBP/RGB"}


def write_images(folder, prefix=""):
    """Writes the good and bad images into ``folder``; returns their file names (prefixed)."""
    os.makedirs(folder, exist_ok=True)
    names = []
    for seed, (name, make) in enumerate(GOOD.items()):
        with open(os.path.join(folder, prefix + name), "wb") as f:
            f.write(make(seed))
        names.append(prefix + name)
    for seed, (name, (make, _)) in enumerate(BAD.items(), 100):
        with open(os.path.join(folder, prefix + name), "wb") as f:
            f.write(make(seed))
        names.append(prefix + name)
    return names


def captions_for(index):
    return [f"a photo of object number {index}", f"picture {index} shows a bright disc on a gradient"]


def make_coco(root):
    """COCO's download layout: annotations/captions_{train,val}2014.json, train2014/, val2014/.

    train2014: the 7 good images (2 captions each) + the 3 bad ones + 1 listed but missing file, plus
      - image 1 also gets an empty caption, a whitespace caption, a repeated caption, a caption with
        bytes that are not UTF-8, a repeated annotation id and a caption that is only punctuation;
      - an annotation for an image id that does not exist;
      - a second images[] entry reusing image 1's id; an entry whose file_name climbs out of the root.
    val2014: 2 good images, one of which reuses a train image id (kept in train only).
    """
    train_names = write_images(os.path.join(root, "train2014"), "COCO_train2014_")
    val_names = write_images(os.path.join(root, "val2014"), "COCO_val2014_")[:2]
    images = [{"id": i + 1, "file_name": n} for i, n in enumerate(train_names)]
    images.append({"id": 50, "file_name": "COCO_train2014_missing.jpg"})
    images.append({"id": 1, "file_name": "COCO_train2014_again.jpg"})          # duplicate_image_id
    images.append({"id": 51, "file_name": "../../etc/passwd"})                 # path_outside_root
    annotations, next_id = [], 1000
    for image in images[:len(train_names) + 1]:
        for caption in captions_for(image["id"]):
            annotations.append({"id": next_id, "image_id": image["id"], "caption": caption})
            next_id += 1
    annotations += [
        {"id": 1, "image_id": 1, "caption": ""},                           # empty_caption
        {"id": 2, "image_id": 1, "caption": "   \n\t "},                   # empty_caption
        {"id": 3, "image_id": 1, "caption": "A photo of object number 1."},  # duplicate_caption
        {"id": 4, "image_id": 1, "caption": "@@INVALID@@"},                # invalid_utf8 (patched below)
        {"id": 1000, "image_id": 1, "caption": "another caption, same id"},  # duplicate_caption_id
        {"id": 5, "image_id": 1, "caption": "?!..."},                      # empty_caption (no words)
        {"id": 6, "image_id": 999, "caption": "an image nobody listed"},   # unknown_image_id
    ]
    os.makedirs(os.path.join(root, "annotations"))
    text = json.dumps({"images": images, "annotations": annotations})
    data = text.encode("utf-8").replace(b"@@INVALID@@", b"caf\xe9 au lait")  # Latin-1 bytes in a UTF-8 file
    with open(os.path.join(root, "annotations", "captions_train2014.json"), "wb") as f:
        f.write(data)
    val_images = [{"id": 200, "file_name": val_names[0]}, {"id": 2, "file_name": val_names[1]}]
    val_annotations = [{"image_id": img["id"], "caption": c} for img in val_images for c in captions_for(img["id"])]
    for i, annotation in enumerate(val_annotations):
        annotation["id"] = 2000 + i
    with open(os.path.join(root, "annotations", "captions_val2014.json"), "w") as f:
        json.dump({"images": val_images, "annotations": val_annotations}, f)
    return {
        "splits": {"train": {"images": 7, "captions": 14}, "val": {"images": 1, "captions": 2}},
        "skipped_images": {"truncated_image": 1, "not_an_image": 1, "empty_file": 1, "missing_file": 1,
                           "duplicate_image_id": 2, "path_outside_root": 1},
        "skipped_captions": {"empty_caption": 3, "duplicate_caption": 1, "invalid_utf8": 1,
                             "duplicate_caption_id": 1, "unknown_image_id": 1, "image_skipped": 10},
        "converted": {"webp_to_jpeg": 1},
    }


def make_karpathy(root, with_filepath=True):
    """A Karpathy split file (dataset_coco.json layout) over 10 files: train 4, restval 2, val 2, test 2.

    The bad images are spread over the splits: restval holds the truncated one, test the text file;
    one test entry repeats a train image's cocoid, one sentence is empty.
    """
    folder = os.path.join(root, "val2014") if with_filepath else root
    names = write_images(folder)
    plan = ["train", "train", "train", "train", "restval", "restval", "val", "val", "test", "test"]
    order = ["rgb.jpg", "gray.jpg", "cmyk.jpg", "rgba.png", "deep.png", "truncated.jpg", "palette.png",
             "photo.webp", "notes.jpg", "rgb.jpg"]
    assert set(order) <= set(names)
    images = []
    for i, (split, name) in enumerate(zip(plan, order)):
        entry = {"split": split, "filename": name, "imgid": i, "cocoid": 1000 + i,
                 "sentences": [{"raw": c, "tokens": c.split()} for c in captions_for(i)]}
        if with_filepath:
            entry["filepath"] = "val2014"
        images.append(entry)
    images[-1]["cocoid"] = 1000                      # repeats the first train image: duplicate_image_id
    images[0]["sentences"].append({"raw": " ", "tokens": []})  # empty_caption
    path = os.path.join(root, "dataset_coco.json")
    with open(path, "w") as f:
        json.dump({"images": images, "dataset": "coco"}, f)
    return path, {
        "splits": {"train": {"images": 5, "captions": 10}, "val": {"images": 2, "captions": 4},
                   "test": {"images": 0, "captions": 0}},
        "skipped_images": {"truncated_image": 1, "not_an_image": 1, "duplicate_image_id": 1},
        "skipped_captions": {"empty_caption": 1, "image_skipped": 6},
    }


def make_folder(root, fmt="csv"):
    """A folder of images with a captions table (CSV or JSON Lines) and a split column.

    Rows: 2 captions per good image; the bad images; a missing file; a row whose caption is not UTF-8; an
    empty caption; a row for an image in another split than its first row; a row with no image.
    """
    names = write_images(os.path.join(root, "images"))
    rows = []
    good = list(GOOD)
    for i, name in enumerate(good):
        split = "test" if i == len(good) - 1 else ("val" if i == len(good) - 2 else "train")
        for caption in captions_for(i):
            rows.append((f"images/{name}", caption, split))
    for name in BAD:
        rows.append((f"images/{name}", "a broken file", "train"))
    rows.append(("images/missing.jpg", "a file that is not there", "train"))
    rows.append((f"images/{good[0]}", "@@INVALID@@", "train"))       # invalid_utf8
    rows.append((f"images/{good[0]}", "  ", "train"))                # empty_caption
    rows.append((f"images/{good[0]}", "moved to val", "val"))        # split_conflict
    rows.append(("", "no image named", "train"))                     # malformed_row
    assert len(names) == len(GOOD) + len(BAD)
    if fmt == "csv":
        lines = ["image,caption,split"] + [f'{p},"{c}",{s}' for p, c, s in rows]
        path = os.path.join(root, "captions.csv")
    else:
        lines = [json.dumps({"image": p, "caption": c, "split": s}) for p, c, s in rows]
        path = os.path.join(root, "captions.jsonl")
    data = "\n".join(lines).encode("utf-8").replace(b"@@INVALID@@", b"\xff\xfe broken")
    with open(path, "wb") as f:
        f.write(data + b"\n")
    return path, {
        "splits": {"train": {"images": 5, "captions": 10}, "val": {"images": 1, "captions": 2},
                   "test": {"images": 1, "captions": 2}},
        "skipped_images": {"truncated_image": 1, "not_an_image": 1, "empty_file": 1, "missing_file": 1},
        "skipped_captions": {"invalid_utf8": 1, "empty_caption": 1, "split_conflict": 1, "malformed_row": 1,
                             "image_skipped": 4},
    }


DISC_COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 70, 230)}


def make_coco_clean(root, counts=(("train2014", 36), ("val2014", 9))):
    """A clean COCO-layout dataset whose captions say something learnable: the colour of a disc."""
    os.makedirs(os.path.join(root, "annotations"))
    colours = list(DISC_COLOURS)
    next_id = 1
    for folder, count in counts:
        os.makedirs(os.path.join(root, folder))
        images, annotations = [], []
        for i in range(count):
            colour = colours[i % len(colours)]
            array = photo(next_id)
            h, w = array.shape[:2]
            yy, xx = np.mgrid[0:h, 0:w]
            array[(yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (h / 3) ** 2] = DISC_COLOURS[colour]
            name = f"COCO_{folder}_{next_id:012d}.jpg"
            with open(os.path.join(root, folder, name), "wb") as f:
                f.write(encode(array, "JPEG", quality=90))
            images.append({"id": next_id, "file_name": name, "height": h, "width": w})
            for k, caption in enumerate([f"a {colour} disc on a background", f"a large {colour} circle"]):
                annotations.append({"id": 10 * next_id + k, "image_id": next_id, "caption": caption})
            next_id += 1
        with open(os.path.join(root, "annotations", f"captions_{folder}.json"), "w") as f:
            json.dump({"images": images, "annotations": annotations}, f)
    return root
