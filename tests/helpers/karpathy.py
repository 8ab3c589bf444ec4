"""Karpathy split files (``dataset_coco.json`` layout) written from a few image entries."""

import json


def karpathy_file(path, images):
    """Writes ``{"dataset": "coco", "images": images}`` to `path` and returns `path`."""
    path.write_text(json.dumps({"dataset": "coco", "images": images}))
    return path


def karpathy_image(cocoid, split, *captions, imgid=0):
    """One ``images[]`` entry of a Karpathy split file; `cocoid` None leaves the key out (imgid is the id)."""
    image = {"filename": f"COCO_val2014_{cocoid or 0:012d}.jpg", "imgid": imgid, "split": split,
             "sentences": [{"raw": c, "tokens": c.lower().split()} for c in captions]}
    if cocoid is not None:
        image["cocoid"] = cocoid
    return image
