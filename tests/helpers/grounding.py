"""Does a word's attention land on the object it names? The statistic the viz tests and issue note use."""

import json

import numpy as np

from tfcaption.datasets.shapes.grammar import COLOURS, SHAPES


def object_patches(obj, width, height, rows, cols):
    """(rows, cols) bool: patches whose cell the object's disc (x, y, radius in pixels) overlaps."""
    cell_w, cell_h = width / cols, height / rows
    mask = np.zeros((rows, cols), bool)
    for r in range(rows):
        for c in range(cols):
            # Distance from the centre to the nearest point of the cell.
            nx = np.clip(obj["x"], c * cell_w, (c + 1) * cell_w)
            ny = np.clip(obj["y"], r * cell_h, (r + 1) * cell_h)
            mask[r, c] = (nx - obj["x"]) ** 2 + (ny - obj["y"]) ** 2 < obj["radius"] ** 2
    return mask


def named_objects(word, objects):
    """The objects a colour or shape word names ("diamonds" names every diamond); [] for other words."""
    if word in COLOURS:
        return [o for o in objects if o["colour"] == word]
    singular = word[:-1] if word.endswith("s") and word[:-1] in SHAPES else word
    if singular in SHAPES:
        return [o for o in objects if o["shape"] == singular]
    return []


def grounding_pairs(result, scene):
    """Per colour/shape word: (mean attention on its objects' patches, mean on background patches,
    attention mass on its objects, fraction of patches they cover). Background = patches no object touches."""
    scene = json.loads(scene) if isinstance(scene, str) else scene
    rows, cols = result["attention"].shape[1:]
    masks = [object_patches(o, scene["width"], scene["height"], rows, cols) for o in scene["objects"]]
    background = ~np.any(masks, axis=0)
    pairs = []
    for word, attention in zip(result["words"], result["attention"]):
        named = named_objects(word, scene["objects"])
        if not named or not background.any():
            continue
        inside = np.any([masks[scene["objects"].index(o)] for o in named], axis=0)
        pairs.append((float(attention[inside].mean()), float(attention[background].mean()),
                      float(attention[inside].sum()), float(inside.mean())))
    return pairs


def summarise(pairs):
    pairs = np.asarray(pairs)
    inside, background, mass, share = pairs.T
    return {
        "pairs": len(pairs),
        "mean_attention_on_object": float(inside.mean()),
        "mean_attention_on_background": float(background.mean()),
        "ratio": float(inside.mean() / background.mean()),
        "fraction_object_beats_background": float(np.mean(inside > background)),
        "attention_mass_on_object": float(mass.mean()),
        "object_patch_share": float(share.mean()),
    }
