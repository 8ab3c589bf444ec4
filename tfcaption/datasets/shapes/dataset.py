"""The built-in `shapes` dataset: procedurally generated scenes with true captions.

Why a synthetic dataset: it trains in minutes on a CPU, needs no download,
and every image comes with its ground truth (the scene: each object's shape,
colour, size and position), so a caption can be scored for what it gets right
about the image (`tfcaption.datasets.shapes.grounding`), not only for n-gram overlap
with references. The `novel` split holds (colour, shape) pairs that never
occur in train/val/test, to measure compositional generalisation.

Every image is a pure function of (config.seed, split, index): splits are
disjoint seed streams, any image can be regenerated alone, and generation can
be spread over processes without changing an example.

Example:

```python
data_dir = build_shapes_dataset("~/tfcaption_data", ShapesConfig(num_train=2000))
```
"""

import contextlib
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator

import numpy as np
from PIL import Image

from tfcaption.config_fields import Annotated, ConfigError, Count, PositiveInt, Range, check_fields, section_from_dict
from tfcaption.datasets.shapes import grammar as shapes_grammar
from tfcaption.datasets.shapes.grammar import COLOURS, SHAPES, SIZES

__all__ = [
    "COLOURS", "MAX_OBJECTS", "NOVEL_PAIRS", "SHAPES", "SIZES", "SPLITS", "ShapesConfig",
    "build_shapes_dataset", "generate_example", "generate_split", "render_scene", "sample_scene",
]

# Held out of train/val/test: each colour once and each shape once, so every
# colour and every shape is still seen in training, only not in these pairs.
NOVEL_PAIRS = (
    ("red", "triangle"), ("green", "star"), ("blue", "hexagon"),
    ("yellow", "circle"), ("purple", "diamond"), ("orange", "square"),
)
SPLITS = ("train", "val", "test", "novel")
# Five large objects still fit (about 2% of random layouts succeed); six do not.
MAX_OBJECTS = 5

# Bump when a change to sampling, rendering or captions changes the output,
# so that cached datasets built by older code are not reused.
_GENERATOR_VERSION = 1

_RGB = {
    "red": (215, 35, 35), "green": (35, 170, 55), "blue": (40, 75, 225),
    "yellow": (240, 215, 30), "purple": (145, 50, 200), "orange": (250, 135, 15),
}
_COLOUR_JITTER = 14          # Per-channel, per-object, uniform +-.
_RADIUS = {"small": 8.0, "large": 15.0}   # Pixels at 96x96, scaled with image_size.
_RADIUS_JITTER = 0.08        # Relative, uniform +-.
_MARGIN = 3.0                # Minimum gap between objects (pixels at 96x96).
_BACKGROUND_LEVEL = (70.0, 180.0)  # Grey level range of the gradient's two ends.
_BACKGROUND_TINT = 18.0      # Per-channel tint: low saturation, never a shape colour.
_NOISE_STD = 5.0             # Pixel noise over the whole image.
_REPEAT_PROBABILITY = 0.25   # An object copies an earlier one's colour and shape...
_REPEAT_SIZE_PROBABILITY = 0.7  # ...and, this often, its size too: counts in captions.
_SUPERSAMPLING = 4           # Antialiasing: 4x4 coverage samples per pixel.
_CHUNK = 128                 # Images per work item when generating in processes.


@dataclasses.dataclass(frozen=True)
class ShapesConfig:
    """Everything that determines a shapes dataset; its fingerprint names the cache.

    Args:
        image_size: width and height of the square images, in pixels.
        num_train, num_val, num_test, num_novel: images per split.
        captions_per_image: reference captions written for each image.
        min_objects, max_objects: objects per scene, drawn uniformly.
        seed: root of every split's seed stream.
        num_shards: TFRecord shards per split.
    """

    PATH = "data.options"  # where a run config holds these fields

    image_size: Annotated[int, Range(32)] = 96
    num_train: Count = 10000
    num_val: Count = 500
    num_test: Count = 1000
    num_novel: Count = 500
    captions_per_image: PositiveInt = 5
    min_objects: Annotated[int, Range(1, MAX_OBJECTS)] = 1
    max_objects: Annotated[int, Range(1, MAX_OBJECTS)] = 4
    seed: Count = 0
    num_shards: PositiveInt = 4

    def __post_init__(self):
        check_fields(self, self.PATH)
        if self.min_objects > self.max_objects:
            raise ConfigError(f"data.options.min_objects {self.min_objects} > max_objects {self.max_objects}.")

    def num_images(self, split: str) -> int:
        """How many images `split` holds."""
        _check_split(split)
        return getattr(self, f"num_{split}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ShapesConfig":
        return section_from_dict(cls, values, cls.PATH)

    def fingerprint(self) -> str:
        """A short, stable hash of the fields and the generator version."""
        text = json.dumps({"generator_version": _GENERATOR_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def sample_scene(config: ShapesConfig, split: str, rng: np.random.Generator) -> dict:
    """Draws a scene: which objects, where; the dict is the scene JSON's content.

    Objects are placed largest first by rejection sampling, each inside the
    image and at least a margin away from the others; a layout that cannot be
    completed is redrawn whole, so the object count is never silently lowered.
    """
    _check_split(split)
    size = config.image_size
    scale = size / 96.0
    seen_pairs = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in NOVEL_PAIRS]
    all_pairs = [(c, s) for c in COLOURS for s in SHAPES]
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    attributes = []
    for i in range(count):
        if i > 0 and rng.random() < _REPEAT_PROBABILITY:
            colour, shape, size_name = attributes[int(rng.integers(i))]
            if rng.random() >= _REPEAT_SIZE_PROBABILITY:
                size_name = SIZES[int(rng.integers(len(SIZES)))]
        else:
            if split != "novel":
                pairs = seen_pairs
            else:  # The first object carries a held-out pair; the others may too.
                pairs = NOVEL_PAIRS if i == 0 else all_pairs
            colour, shape = pairs[int(rng.integers(len(pairs)))]
            size_name = SIZES[int(rng.integers(len(SIZES)))]
        attributes.append((colour, shape, size_name))
    radii = [_RADIUS[s] * scale * rng.uniform(1 - _RADIUS_JITTER, 1 + _RADIUS_JITTER)
             for _, _, s in attributes]
    order = sorted(range(count), key=lambda i: -radii[i])
    for _ in range(1000):
        placed = _place(rng, [radii[i] for i in order], size, scale)
        if placed is not None:
            break
    else:
        raise RuntimeError(f"Could not place {count} objects in a {size}x{size} image.")
    objects = []
    for i, (x, y) in zip(order, placed):
        colour, shape, size_name = attributes[i]
        objects.append({"shape": shape, "colour": colour, "size": size_name,
                        "x": round(x, 2), "y": round(y, 2), "radius": round(radii[i], 2)})
    return {"width": size, "height": size, "objects": objects}


def render_scene(scene: dict, rng: np.random.Generator) -> np.ndarray:
    """Paints a scene: uint8 [height, width, 3].

    The background is a random low-saturation gradient; each object gets its
    colour with a small per-object jitter, antialiased by supersampling; pixel
    noise covers everything, so no two images share a background.
    """
    height, width = scene["height"], scene["width"]
    ends = [rng.uniform(*_BACKGROUND_LEVEL) + rng.uniform(-_BACKGROUND_TINT, _BACKGROUND_TINT, 3)
            for _ in range(2)]
    angle = rng.uniform(0.0, 2.0 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    along = ((xs - width / 2) * np.cos(angle) + (ys - height / 2) * np.sin(angle)) / max(width, height)
    t = np.clip(along + 0.5, 0.0, 1.0)[..., None]
    image = ((1.0 - t) * ends[0] + t * ends[1]).astype(np.float32)
    for obj in scene["objects"]:
        colour = np.asarray(_RGB[obj["colour"]], np.float32) + rng.uniform(-_COLOUR_JITTER, _COLOUR_JITTER, 3)
        (top, left), coverage = _coverage(obj, height, width)
        patch = image[top:top + coverage.shape[0], left:left + coverage.shape[1]]
        patch += coverage[..., None] * (colour - patch)
    image += rng.normal(0.0, _NOISE_STD, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def generate_example(config: ShapesConfig, split: str, index: int) -> dict:
    """Image `index` of `split`, in the shared example format.

    Returns {"image_id", "image" (PNG bytes), "captions", "scene" (JSON text)}.
    """
    rng = np.random.default_rng([config.seed, SPLITS.index(split), index])
    scene = sample_scene(config, split, rng)
    pixels = render_scene(scene, rng)
    captions = []
    draws = 0
    while len(captions) < config.captions_per_image:
        caption = shapes_grammar.describe_scene(scene["objects"], rng)
        draws += 1
        # Distinct references where the scene allows them (a one-object scene has few paraphrases).
        if caption not in captions or draws > 10 * config.captions_per_image:
            captions.append(caption)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return {"image_id": f"shapes-{split}-{index:06d}", "image": buffer.getvalue(),
            "captions": captions, "scene": json.dumps(scene)}


def generate_split(config: ShapesConfig, split: str) -> Iterator[dict]:
    """The examples of one split, in index order."""
    _check_split(split)
    for index in range(config.num_images(split)):
        yield generate_example(config, split, index)


def build_shapes_dataset(root: str, config: ShapesConfig | None = None, verbose: bool = True,
                         workers: int = 1) -> str:
    """Writes the dataset as TFRecord shards and returns its directory.

    The directory is `<root>/shapes-<fingerprint>/`; if its manifest already
    carries this fingerprint it is returned at once. Otherwise the dataset is
    generated into a temporary directory beside it and renamed into place,
    so an interrupted run never leaves a half-written dataset behind.

    Args:
        root: where datasets live.
        config: a `ShapesConfig`; the defaults when None.
        verbose: print progress and speed per split.
        workers: generator processes (default 1). Any count gives the same
            examples. Processes are spawned, so a script that asks for more
            than one must call this under `if __name__ == "__main__":`.
    """
    config = config or ShapesConfig()
    root = os.path.abspath(os.path.expanduser(root))
    data_dir = os.path.join(root, f"shapes-{config.fingerprint()}")
    if _is_complete(data_dir, config):
        return data_dir
    if os.path.exists(data_dir):  # No valid manifest: not a dataset this code wrote whole.
        shutil.rmtree(data_dir)
    os.makedirs(root, exist_ok=True)
    tmp_dir = f"{data_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    from tfcaption.data import records  # TensorFlow, only when writing.

    try:
        splits = {}
        with _pool(workers) as pool:
            for split in SPLITS:
                start = time.perf_counter()
                shards = records.write_shards(_examples(config, split, pool), tmp_dir, split,
                                              _num_shards(config, split))
                splits[split] = {"images": shards.images, "captions": shards.captions, "shards": len(shards)}
                if verbose:
                    seconds = time.perf_counter() - start
                    print(f"shapes: {split}: {shards.images} images in {seconds:.1f} s "
                          f"({shards.images / max(seconds, 1e-9):.0f} images/s)", flush=True)
        records.write_manifest(tmp_dir, {
            "name": "shapes",
            "fingerprint": config.fingerprint(),
            "config": config.to_dict(),
            "novel_pairs": [list(pair) for pair in NOVEL_PAIRS],
            "vocabulary": {"shapes": list(SHAPES), "colours": list(COLOURS), "sizes": list(SIZES)},
            "splits": splits,
            "skipped": {},
        })
        try:
            os.rename(tmp_dir, data_dir)
        except OSError:
            if not _is_complete(data_dir, config):  # Only a concurrent build may win the race.
                raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    if verbose:
        print(f"shapes: wrote {data_dir}", flush=True)
    return data_dir


def _place(rng, radii, size, scale):
    """Centres for objects of the given radii, or None if one did not fit."""
    margin, edge = _MARGIN * scale, 1.0 * scale
    centres = []
    for radius in radii:
        for _ in range(100):
            x, y = rng.uniform(radius + edge, size - radius - edge, 2)
            if all(np.hypot(x - cx, y - cy) >= radius + r + margin for (cx, cy), r in zip(centres, radii)):
                centres.append((float(x), float(y)))
                break
        else:
            return None
    return centres


def _coverage(obj, height, width):
    """The fraction of each pixel that the object covers, over its bounding box.

    Pixel (row, col) spans [col, col + 1) x [row, row + 1); the object is
    tested at 4x4 points per pixel, in coordinates where its radius is 1.
    """
    x, y, radius = obj["x"], obj["y"], obj["radius"]
    left, right = max(int(np.floor(x - radius - 1)), 0), min(int(np.ceil(x + radius + 1)), width)
    top, bottom = max(int(np.floor(y - radius - 1)), 0), min(int(np.ceil(y + radius + 1)), height)
    offsets = (np.arange(_SUPERSAMPLING, dtype=np.float32) + 0.5) / _SUPERSAMPLING
    u = ((np.arange(left, right, dtype=np.float32)[:, None] + offsets).reshape(-1) - x) / radius
    v = ((np.arange(top, bottom, dtype=np.float32)[:, None] + offsets).reshape(-1) - y) / radius
    inside = _INSIDE[obj["shape"]](u[None, :], v[:, None])
    coverage = inside.reshape(bottom - top, _SUPERSAMPLING, right - left, _SUPERSAMPLING).mean(axis=(1, 3))
    return (top, left), coverage.astype(np.float32)


def _inside_star(u, v, inner=0.45, points=5):
    """A five-pointed star pointing up: fold the angle into one half-point.

    After folding, the boundary is the segment from the outer tip (0, 1) to
    the inner corner at half a point's angle; inside is the origin's side.
    """
    half = np.pi / points
    angle = np.mod(np.arctan2(u, -v), 2 * half)
    angle = np.minimum(angle, 2 * half - angle)
    rho = np.hypot(u, v)
    px, py = rho * np.sin(angle), rho * np.cos(angle)
    cx, cy = inner * np.sin(half), inner * np.cos(half)
    # Cross product of (corner - tip) with (point - tip): the origin gives -cx < 0.
    return cx * (py - 1.0) - (cy - 1.0) * px <= 0.0


# Unit shapes (radius 1, v grows downward), each inside the unit circle so
# that `radius` bounds every shape and the placement margin is exact.
_INSIDE = {
    "circle": lambda u, v: u * u + v * v <= 1.0,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.7071,
    "triangle": lambda u, v: (v <= 0.5) & (np.sqrt(3.0) * np.abs(u) - v <= 1.0),
    "diamond": lambda u, v: np.abs(u) / 0.62 + np.abs(v) <= 1.0,
    "star": _inside_star,
    "hexagon": lambda u, v: (np.abs(v) <= 0.866) & (np.sqrt(3.0) * np.abs(u) + np.abs(v) <= np.sqrt(3.0)),
}


def _examples(config, split, pool):
    """A split's examples in index order, generated in `pool`'s processes if given."""
    count = config.num_images(split)
    if pool is None or count <= _CHUNK:
        return generate_split(config, split)
    chunks = [(config, split, start, min(start + _CHUNK, count)) for start in range(0, count, _CHUNK)]
    return (example for chunk in pool.imap(_generate_chunk, chunks) for example in chunk)


def _pool(workers):
    """Generator processes, or no pool for one worker.

    Spawned, not forked: the parent may already run TensorFlow's threads,
    and the workers need only numpy and PIL.
    """
    if workers <= 1:
        return contextlib.nullcontext()
    return multiprocessing.get_context("spawn").Pool(workers)


def _generate_chunk(args):
    config, split, start, stop = args
    return [generate_example(config, split, index) for index in range(start, stop)]


def _num_shards(config, split):
    return max(1, min(config.num_shards, config.num_images(split)))


def _is_complete(data_dir, config):
    try:
        with open(os.path.join(data_dir, "manifest.json"), encoding="utf-8") as f:
            return json.load(f).get("fingerprint") == config.fingerprint()
    except (OSError, ValueError):
        return False


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(f"Unknown shapes split {split!r}; expected one of {SPLITS}.")

