"""Google's ViT `.npz` checkpoints: find or download them, read them, load them into `VisionTransformer`.

A checkpoint of https://github.com/google-research/vision_transformer is a numpy `.npz` archive of the
Flax parameters, keyed by their path (`Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel`, ...).
`read_npz` checks every array and infers the architecture from their shapes (nothing is taken from the
file name), `load_npz_weights` copies them into a `VisionTransformer` (resizing the position embeddings
for another image size as Google's `load_pretrained` does), and `vit_from_npz` builds the model.
`checkpoint_path` turns a known name (`vit_b16`, `ViT-B_16`), a URL or a local path into a local file,
downloading it once into a cache folder.

Example:
>>> ARCHITECTURES["vit_b16"]["hidden_dim"], ARCHITECTURES["vit_b16"]["file"]
(768, 'ViT-B_16.npz')
>>> pos = np.zeros((1, 1 + 4 * 4, 8), "float32")
>>> resize_position_embedding(pos, (6, 3)).shape
(1, 19, 8)
"""

import dataclasses
import numbers
import os
import urllib.parse
import urllib.request

import keras
import numpy as np

from tfcaption.layers.image_encoder import CheckpointNotFoundError
from tfcaption.layers.vit import VisionTransformer

ARCHITECTURES = {
    "vit_b16": {"patch_size": 16, "hidden_dim": 768, "num_heads": 12, "num_layers": 12, "mlp_dim": 3072,
                "image_size": 224, "file": "ViT-B_16.npz"},
    "vit_b32": {"patch_size": 32, "hidden_dim": 768, "num_heads": 12, "num_layers": 12, "mlp_dim": 3072,
                "image_size": 224, "file": "ViT-B_32.npz"},
    "vit_l16": {"patch_size": 16, "hidden_dim": 1024, "num_heads": 16, "num_layers": 24, "mlp_dim": 4096,
                "image_size": 224, "file": "ViT-L_16.npz"},
    "vit_l32": {"patch_size": 32, "hidden_dim": 1024, "num_heads": 16, "num_layers": 24, "mlp_dim": 4096,
                "image_size": 224, "file": "ViT-L_32.npz"},
}
"""Google's ImageNet-21k ViT checkpoints: sizes, the image size they were trained at, their file name."""

DEFAULT_URL = "https://storage.googleapis.com/vit_models/imagenet21k/{file}"
CACHE_ENV = "TFCAPTION_VIT_CACHE"
DEFAULT_CACHE_DIR = os.path.join("~", ".keras", "weights")  # where vit-keras keeps its downloads
DOWNLOAD_TIMEOUT_S = 60

_BLOCK = "Transformer/encoderblock_{}"
_ATTENTION = "MultiHeadDotProductAttention_1"


@dataclasses.dataclass(frozen=True, eq=False)
class VitCheckpoint:
    """A checked ViT checkpoint: its arrays and the architecture inferred from their shapes."""

    source: str
    arrays: dict = dataclasses.field(repr=False)
    patch_size: int
    hidden_dim: int
    num_heads: int
    num_layers: int
    mlp_dim: int
    grid: tuple  # (rows, cols) of the position embeddings' patch grid

    @property
    def image_size(self):
        """(height, width) the checkpoint's position embeddings were trained for."""
        return (self.grid[0] * self.patch_size, self.grid[1] * self.patch_size)

    @property
    def architecture(self):
        """The name in `ARCHITECTURES` with these sizes, or None."""
        sizes = self.backbone_kwargs()
        for name, known in ARCHITECTURES.items():
            if all(known[k] == v for k, v in sizes.items()):
                return name
        return None

    def backbone_kwargs(self):
        return {"patch_size": self.patch_size, "hidden_dim": self.hidden_dim, "num_heads": self.num_heads,
                "num_layers": self.num_layers, "mlp_dim": self.mlp_dim}


def _one_line(text):
    return " ".join(str(text).split())


def _shape(shape):
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _expected_shapes(patch, hidden, heads, layers, mlp, tokens):
    head_dim = hidden // heads
    shapes = {
        "embedding/kernel": (patch, patch, 3, hidden), "embedding/bias": (hidden,), "cls": (1, 1, hidden),
        "Transformer/posembed_input/pos_embedding": (1, tokens, hidden),
        "Transformer/encoder_norm/scale": (hidden,), "Transformer/encoder_norm/bias": (hidden,),
    }
    for i in range(layers):
        block = _BLOCK.format(i)
        for norm in ("LayerNorm_0", "LayerNorm_2"):
            shapes[f"{block}/{norm}/scale"] = shapes[f"{block}/{norm}/bias"] = (hidden,)
        for name in ("query", "key", "value"):
            shapes[f"{block}/{_ATTENTION}/{name}/kernel"] = (hidden, heads, head_dim)
            shapes[f"{block}/{_ATTENTION}/{name}/bias"] = (heads, head_dim)
        shapes[f"{block}/{_ATTENTION}/out/kernel"] = (heads, head_dim, hidden)
        shapes[f"{block}/{_ATTENTION}/out/bias"] = (hidden,)
        shapes[f"{block}/MlpBlock_3/Dense_0/kernel"] = (hidden, mlp)
        shapes[f"{block}/MlpBlock_3/Dense_0/bias"] = (mlp,)
        shapes[f"{block}/MlpBlock_3/Dense_1/kernel"] = (mlp, hidden)
        shapes[f"{block}/MlpBlock_3/Dense_1/bias"] = (hidden,)
    return shapes


def _infer(arrays, source):
    """The architecture of `arrays` (Google's layout), every array checked; ValueError naming `source`."""

    def fail(problem):
        return ValueError(_one_line(f"ViT checkpoint {source}: {problem}"))

    def get(key, ndim):
        if key not in arrays:
            raise fail(f"missing key '{key}'")
        value = arrays[key]
        if value.ndim != ndim:
            raise fail(f"'{key}' has shape {_shape(value.shape)}, expected {ndim} dimensions")
        return value

    kernel = get("embedding/kernel", 4)
    patch, patch_w, channels, hidden = kernel.shape
    if patch != patch_w or channels != 3:
        raise fail(f"'embedding/kernel' has shape {_shape(kernel.shape)}, expected (P, P, 3, D)")
    tokens = get("Transformer/posembed_input/pos_embedding", 3).shape[1]
    side = int(round(np.sqrt(max(tokens - 1, 0))))
    if tokens < 2 or side * side != tokens - 1:
        raise fail(f"'Transformer/posembed_input/pos_embedding' has {tokens} positions, expected 1 + a "
                   f"square number (a class token and a square grid)")
    heads = get(f"{_BLOCK.format(0)}/{_ATTENTION}/query/kernel", 3).shape[1]
    mlp = get(f"{_BLOCK.format(0)}/MlpBlock_3/Dense_0/kernel", 2).shape[1]
    prefix = "Transformer/encoderblock_"
    indices = {key[len(prefix):].split("/", 1)[0] for key in arrays if key.startswith(prefix)}
    try:
        numbers = sorted(int(i) for i in indices)
    except ValueError:
        raise fail(f"unexpected block names {sorted(indices)}") from None
    layers = len(numbers)
    if numbers != list(range(layers)):
        raise fail(f"blocks {numbers} are not numbered 0 to {layers - 1}")
    if hidden % heads:
        raise fail(f"hidden size {hidden} is not a multiple of the {heads} heads")
    for key, shape in _expected_shapes(patch, hidden, heads, layers, mlp, tokens).items():
        value = get(key, len(shape))
        if tuple(value.shape) != shape:
            raise fail(f"'{key}' has shape {_shape(value.shape)}, expected {_shape(shape)} (patch {patch}, "
                       f"hidden {hidden}, {heads} heads, {layers} layers, mlp {mlp}, {tokens} positions)")
    return VitCheckpoint(source, dict(arrays), patch, hidden, heads, layers, mlp, (side, side))


def read_npz(path):
    """Reads a Google ViT `.npz` checkpoint, checks it, and infers its architecture from the arrays.

    Keys `pre_logits/*` and `head/*` (the classifier) are kept but not checked.

    Args:
        path: str or path-like. A local `.npz` file (see `checkpoint_path` for names and URLs).

    Returns:
        A `VitCheckpoint` with `arrays` (name -> numpy array), `patch_size`, `hidden_dim`,
        `num_heads`, `num_layers`, `mlp_dim` and the position embeddings' `grid` (rows, cols).

    Raises:
        CheckpointNotFoundError: the file does not exist.
        ValueError: (one line naming the file) it is not an `.npz` archive, a key is missing, or an
            array's shape does not fit the others.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(f"ViT checkpoint {path} not found.")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single .npy array")
        with loaded:
            arrays = {key: np.asarray(loaded[key]) for key in loaded.files}
    except Exception as error:  # zipfile.BadZipFile, ValueError (pickles, .npy), OSError, EOFError, ...
        raise ValueError(_one_line(f"ViT checkpoint {path} is not an .npz archive ({type(error).__name__}: "
                                   f"{error})")) from None
    return _infer(arrays, path)


def resize_position_embedding(pos_embedding, grid):
    """Resizes ViT position embeddings `(1, 1 + g * g, D)` to another grid, as Google's `load_pretrained`.

    The class token's row is kept; the others, reshaped to (g, g, D), are zoomed linearly
    (`scipy.ndimage.zoom(order=1)`) by (rows / g, cols / g, 1) and flattened back row by row.

    Args:
        pos_embedding: numpy array (1, 1 + g * g, D).
        grid: int or (rows, cols). The new patch grid.

    Returns:
        numpy array (1, 1 + rows * cols, D), of `pos_embedding`'s dtype; `pos_embedding` itself when
        the grid is unchanged.
    """
    pos_embedding = np.asarray(pos_embedding)
    rows, cols = (int(grid), int(grid)) if isinstance(grid, numbers.Integral) else (int(grid[0]), int(grid[1]))
    if pos_embedding.ndim != 3 or pos_embedding.shape[0] != 1:
        raise ValueError(f"position embeddings must be (1, 1 + g * g, D), got {_shape(pos_embedding.shape)}.")
    cells = pos_embedding.shape[1] - 1
    side = int(round(np.sqrt(cells)))
    if side * side != cells:
        raise ValueError(f"position embeddings {_shape(pos_embedding.shape)} do not hold a class token and a "
                         f"square grid.")
    if (rows, cols) == (side, side):
        return pos_embedding
    from scipy import ndimage  # only here: most loads keep the checkpoint's size
    token, cells = pos_embedding[:, :1], pos_embedding[0, 1:].reshape(side, side, -1)
    zoomed = ndimage.zoom(cells, (rows / side, cols / side, 1), order=1)
    if zoomed.shape[:2] != (rows, cols):  # scipy rounds the output shape; guard against a surprise
        raise ValueError(f"resizing position embeddings {side}x{side} -> {rows}x{cols} gave {zoomed.shape[:2]}.")
    return np.concatenate([token, zoomed.reshape(1, rows * cols, -1).astype(pos_embedding.dtype)], axis=1)


def _assign(variable, value, key, source):
    if tuple(variable.shape) != tuple(value.shape):
        raise ValueError(f"ViT checkpoint {source}: '{key}' has shape {_shape(value.shape)}, the backbone's "
                         f"{variable.path} is {_shape(variable.shape)}.")
    variable.assign(np.asarray(value, dtype=variable.dtype))


def load_npz_weights(backbone: VisionTransformer, arrays):
    """Copies Google ViT weights into `backbone` (built here if it is not yet).

    The position embeddings are resized (`resize_position_embedding`) when the backbone's patch grid
    differs from the checkpoint's. `pre_logits/*` and `head/*` are ignored.

    Args:
        backbone: a `VisionTransformer` with the checkpoint's patch size, width, heads, layers and MLP width.
        arrays: a `VitCheckpoint` from `read_npz`, or a mapping of Google's key names to numpy arrays.

    Returns:
        The `VitCheckpoint` the weights came from.

    Raises:
        ValueError: (one line) an array is missing or does not fit the backbone.
    """
    checkpoint = arrays if isinstance(arrays, VitCheckpoint) else _infer(
        {k: np.asarray(v) for k, v in arrays.items()}, "<arrays>")
    source, weights = checkpoint.source, checkpoint.arrays
    mine = {"patch_size": backbone.patch_size, "hidden_dim": backbone.hidden_dim,
            "num_heads": backbone.num_heads, "num_layers": backbone.num_layers, "mlp_dim": backbone.mlp_dim}
    if mine != checkpoint.backbone_kwargs():
        raise ValueError(_one_line(f"ViT checkpoint {source} has {checkpoint.backbone_kwargs()}, the backbone "
                                   f"{mine}."))
    if not backbone.built:
        backbone.build((None,) + backbone.image_size + (3,))

    def put(variable, key, value=None):
        _assign(variable, weights[key] if value is None else value, key, source)

    put(backbone.patch_embedding.kernel, "embedding/kernel")
    put(backbone.patch_embedding.bias, "embedding/bias")
    put(backbone.class_token, "cls")
    key = "Transformer/posembed_input/pos_embedding"
    put(backbone.position_embedding, key, resize_position_embedding(weights[key], backbone.grid))
    for i, block in enumerate(backbone.blocks):
        prefix = _BLOCK.format(i)
        for norm, layer in (("LayerNorm_0", block.attention_norm), ("LayerNorm_2", block.mlp_norm)):
            put(layer.gamma, f"{prefix}/{norm}/scale")
            put(layer.beta, f"{prefix}/{norm}/bias")
        attention = block.attention
        for name, dense in (("query", attention.query_dense), ("key", attention.key_dense),
                            ("value", attention.value_dense), ("out", attention.output_dense)):
            put(dense.kernel, f"{prefix}/{_ATTENTION}/{name}/kernel")
            put(dense.bias, f"{prefix}/{_ATTENTION}/{name}/bias")
        for name, dense in (("Dense_0", block.mlp_inner), ("Dense_1", block.mlp_output)):
            put(dense.kernel, f"{prefix}/MlpBlock_3/{name}/kernel")
            put(dense.bias, f"{prefix}/MlpBlock_3/{name}/bias")
    put(backbone.encoder_norm.gamma, "Transformer/encoder_norm/scale")
    put(backbone.encoder_norm.beta, "Transformer/encoder_norm/bias")
    return checkpoint


def vit_from_npz(path, image_size=None, gelu="tanh", dtype=None):
    """A `keras.Model` from images in [-1, 1] to all ViT tokens after `encoder_norm`, with npz weights.

    Args:
        path: a local `.npz` file, a known name (`vit_b16`, `ViT-B_16`, ...) or a URL; see
            `checkpoint_path` (a name or URL is downloaded once into the cache folder).
        image_size: int or (height, width), multiples of the patch size; None for the checkpoint's own
            size. The position embeddings are resized for another size.
        gelu: "tanh" (what Google's checkpoints were trained with) or "erf" (the exact GELU, as vit-keras).
        dtype: the backbone's dtype policy, e.g. "mixed_bfloat16"; None for the global policy.

    Returns:
        A functional `keras.Model` (B, H, W, 3) float -> (B, 1 + (H / P) * (W / P), D), its layer
        `vision_transformer` a `VisionTransformer`: the class token first, then the patches row by row.
    """
    checkpoint = read_npz(checkpoint_path(path))
    size = checkpoint.image_size if image_size is None else image_size
    backbone = VisionTransformer(**checkpoint.backbone_kwargs(), image_size=size, gelu=gelu, dtype=dtype,
                                 name="vision_transformer")
    load_npz_weights(backbone, checkpoint)
    images = keras.Input(backbone.image_size + (3,), name="images")
    return keras.Model(images, backbone(images), name=checkpoint.architecture or "vit")


def _cache_dir(cache_dir):
    folder = cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR
    return os.path.abspath(os.path.expanduser(os.fspath(folder)))


def _known(name):
    for key, arch in ARCHITECTURES.items():
        stem = arch["file"][:-len(".npz")]
        if name in (key, stem, arch["file"]):
            return arch["file"]
    return None


def _download(url, target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial = f"{target}.part{os.getpid()}"
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(partial, "wb") as out:
            while True:
                chunk = response.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
        with open(partial, "rb") as f:
            if f.read(4) != b"PK\x03\x04":  # an .npz is a zip archive; not an error page in the cache
                raise ValueError("the server's answer is not an .npz archive")
        os.replace(partial, target)
    except (OSError, ValueError) as error:  # URLError, HTTPError, timeouts are OSErrors
        if os.path.exists(partial):
            os.remove(partial)
        reason = getattr(error, "reason", None) or error
        raise CheckpointNotFoundError(_one_line(
            f"could not download the ViT checkpoint {url} ({type(error).__name__}: {reason}): download it "
            f"yourself and put it at {target} (or set {CACHE_ENV} to a folder that holds "
            f"{os.path.basename(target)})")) from None


def checkpoint_path(name_or_path, cache_dir=None):
    """A local file for a ViT checkpoint given by path, known name or URL, downloaded once when needed.

    - a local file is returned as is;
    - a known name (`vit_b16`, `ViT-B_16`, `ViT-B_16.npz`; see `ARCHITECTURES`) is the file of that name
      in the cache folder, downloaded from `DEFAULT_URL` (Google's ImageNet-21k checkpoints) when missing.
      A vit-keras download of the same checkpoint (`ViT-B_16_imagenet21k.npz`) in the folder is reused;
    - an `http(s)://` URL is the file named by its last path component in the cache folder, downloaded
      from the URL when missing.

    The cache folder is `cache_dir`, else `$TFCAPTION_VIT_CACHE`, else `~/.keras/weights` (where vit-keras
    and `keras.utils.get_file` keep weights). Downloads go to a temporary name first, so an interrupted
    one leaves no truncated checkpoint behind.

    Args:
        name_or_path: str or path-like.
        cache_dir: str or None.

    Returns:
        str, the path of an existing file.

    Raises:
        CheckpointNotFoundError: (a `FileNotFoundError`, one line) the local path does not exist, or the
            download failed; the message names the exact path to put the file at.
    """
    text = os.fspath(name_or_path)
    if text.startswith(("http://", "https://")):
        name = os.path.basename(urllib.parse.urlparse(text).path)
        if not name:
            raise CheckpointNotFoundError(f"the ViT checkpoint URL {text} does not end with a file name.")
        target = os.path.join(_cache_dir(cache_dir), name)
        if not os.path.isfile(target):
            _download(text, target)
        return target
    if os.path.isfile(text):
        return text
    file = _known(text)
    if file is None:
        raise CheckpointNotFoundError(
            f"ViT checkpoint {text} not found: not a file, a URL or a known name ({', '.join(ARCHITECTURES)}).")
    folder = _cache_dir(cache_dir)
    target = os.path.join(folder, file)
    vit_keras_copy = os.path.join(folder, file.replace(".npz", "_imagenet21k.npz"))
    for candidate in (target, vit_keras_copy):
        if os.path.isfile(candidate):
            return candidate
    _download(DEFAULT_URL.format(file=file), target)
    return target
