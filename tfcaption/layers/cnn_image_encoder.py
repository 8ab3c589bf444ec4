"""The `cnn` image encoder: pixels -> a `keras.applications` CNN cut at a spatial layer -> one token per cell."""

import contextlib
import os
import re
import warnings

import keras
from keras import ops

from tfcaption.layers.image_encoder import BackboneMixin, CheckpointNotFoundError, TokenGrid
from tfcaption.layers.patch_encoder import PatchEncoder

_KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"

# backbone: (keras.applications constructor, module with its preprocess_input, default cut layer,
#            folder under _KERAS_WEIGHTS_URL, md5 of the no-top ImageNet file). The file names, folders and
#            hashes are keras.applications' own (resnet.py, vgg16.py, vgg19.py), so the file Keras caches
#            in ~/.keras/models is the one found here and the other way round.
BACKBONES = {
    "resnet50": ("ResNet50", "resnet50", "conv5_block3_out", "resnet", "4d473c1dd8becc155b73f8504c6f6626"),
    "resnet101": ("ResNet101", "resnet", "conv5_block3_out", "resnet", "88cf7a10940856eca736dc7b7e228a21"),
    "resnet152": ("ResNet152", "resnet", "conv5_block3_out", "resnet", "ee4c566cf9a93f14d82f913c2dc6dd0c"),
    "vgg16": ("VGG16", "vgg16", "block5_conv3", "vgg16", "6d6bbae143d832006294945121d1f1fc"),
    "vgg19": ("VGG19", "vgg19", "block5_conv3", "vgg19", "253f8cb515780f3b799900260a226db6"),
}
_RESNET_UNIT = re.compile(r"(conv\d+_block\d+)_")
_VGG_BLOCK = re.compile(r"(block\d+)_")


def _one_line(text):
    return " ".join(str(text).split())


def imagenet_file_name(backbone):
    """The file keras.applications downloads for `backbone`'s ImageNet weights without the top."""
    return f"{backbone}_weights_tf_dim_ordering_tf_kernels_notop.h5"


def keras_models_dir():
    """The folder Keras's `get_file(..., cache_subdir="models")` reads and writes, as Keras picks it."""
    home = os.environ.get("KERAS_HOME")
    if home is None:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    if not os.access(os.path.expanduser(home), os.W_OK):
        home = "/tmp/.keras"  # get_file's own fallback for a read-only cache
    return os.path.join(os.path.expanduser(home), "models")


def _check_backbone(backbone):
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {tuple(BACKBONES)}, got {backbone!r}.")
    return backbone


def weights_file(backbone, source):
    """The local file of `source` ("imagenet": Keras's own download into its cache, done once; else a
    path) for `backbone`.

    Raises:
        CheckpointNotFoundError: (one line) the path does not exist, or the ImageNet file is neither in
            Keras's cache nor downloadable; the message names the file and the folder to put it in.
    """
    _check_backbone(backbone)
    if source == "imagenet":
        file_name, folder = imagenet_file_name(backbone), keras_models_dir()
        url = f"{_KERAS_WEIGHTS_URL}{BACKBONES[backbone][3]}/{file_name}"
        try:
            return keras.utils.get_file(file_name, url, cache_subdir="models", file_hash=BACKBONES[backbone][4])
        except Exception as error:  # get_file raises a bare Exception for URL errors, ValueError for hashes
            raise CheckpointNotFoundError(_one_line(
                f"could not download the {backbone} ImageNet weights {file_name} from {url} "
                f"({type(error).__name__}: {error}): download it yourself and put it in {folder}")) from None
    path = os.path.expanduser(os.fspath(source))
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(f"{backbone} weights file {path} not found.")
    return path


@contextlib.contextmanager
def _global_dtype_policy(dtype):
    """`dtype` as the global policy inside the block (keras.applications' constructors take no dtype),
    the previous policy restored whatever happens."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _application(backbone, image_size):
    """keras.applications' model without its top, random: weights are copied in by name afterwards."""
    constructor = getattr(keras.applications, BACKBONES[backbone][0])
    return constructor(include_top=False, weights=None, input_shape=(image_size, image_size, 3))


def _feature_layer(model, backbone, name):
    """`model`'s layer `name`, checked to give a (B, H, W, C) feature map."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    spatial = [layer for layer in layers if len(layer.output.shape) == 4]
    found = next((layer for layer in spatial if layer.name == name), None)
    if found is not None:
        return found
    stage_ends = {}
    for layer in spatial:  # the last layer of each stage (conv2_*, block3_*, ...) names a useful cut
        stage_ends[layer.name.split("_")[0]] = layer.name
    examples = ", ".join(dict.fromkeys(list(stage_ends.values()) + [BACKBONES[backbone][2]]))
    known = any(layer.name == name for layer in model.layers)
    problem = "has no feature map (a 4-D output after the input) at layer" if known else "has no layer"
    raise ValueError(_one_line(f"{backbone} {problem} {name!r}; valid layers include {examples} (any of its "
                               f"{len(spatial)} layers after the input)."))


@keras.saving.register_keras_serializable(package="tfcaption")
class CnnImageEncoder(BackboneMixin, keras.layers.Layer):
    """Square images in, one token per cell of a CNN feature map out, row by row.

    A `keras.applications` ResNet or VGG without its top is cut at `layer` (`keras.Model(input,
    layer.output)`); the cells of that feature map, `(rows, cols, channels)`, are the image tokens, as in
    the CNN-grid captioners. Pixels in [0, 255] go through the backbone's own `preprocess_input` (caffe
    mode: RGB -> BGR, ImageNet channel means subtracted) inside `call`, so the SavedModel does it too.
    `PatchEncoder` projects each cell to `hidden_dim`, adds positions over the grid and layer-normalises.

    The backbone's weights are random here (the model is built from its config alone); a run copies
    the configured `weights` in with `load_pretrained_weights()`.

    Args:
        backbone: "resnet50", "resnet101", "resnet152", "vgg16" or "vgg19".
        layer: str. The Keras layer the backbone is cut after; "" is the last feature map before
            pooling: `conv5_block3_out` for ResNets (7 x 7 x 2048 at 224 px), `block5_conv3` for VGG
            (14 x 14 x 512 at 224 px).
        image_size: int. Input side in pixels (32 or more).
        hidden_dim: int. Token width.
        positions: "learned" or "sinusoid_2d".
        layer_norm_epsilon: float. Epsilon of the tokens' LayerNorm.
        weights: str. What `load_pretrained_weights` loads: "" nothing (random), "imagenet" (Keras's
            own download, cached in ~/.keras/models) or the path of a weights file of the
            keras.applications model without its top (`.weights.h5`, or the legacy `.h5` of Keras's
            ImageNet files).
        train_backbone: "all", "last_n" or "frozen" (see `BackboneMixin`).
        trainable_blocks: int. With "last_n": how many of the last blocks (ResNet residual units,
            VGG blocks) train.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> encoder = CnnImageEncoder("vgg16", image_size=64, hidden_dim=32)
    >>> tokens, mask = encoder(keras.ops.zeros((2, 64, 64, 3)))
    >>> tuple(tokens.shape), mask, encoder.token_grid
    ((2, 16, 32), None, TokenGrid(rows=4, cols=4, prefix=0))

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016; Simonyan and Zisserman,
        "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015.
    """

    def __init__(self, backbone="resnet50", layer="", image_size=224, hidden_dim=512, positions="sinusoid_2d",
                 layer_norm_epsilon=1e-5, weights="", train_backbone="all", trainable_blocks=0, **kwargs):
        super().__init__(**kwargs)
        self.backbone_name = _check_backbone(backbone)
        self.cut_layer = layer or ""
        self.image_size_px = int(image_size)
        self.hidden_dim = int(hidden_dim)
        self.positions = positions
        self.layer_norm_epsilon = layer_norm_epsilon
        self.weights_source = weights or ""
        self.train_backbone = train_backbone
        self.trainable_blocks = int(trainable_blocks)
        if self.image_size_px < 32:
            raise ValueError(f"image_size {image_size} is below the keras.applications CNNs' 32 px minimum.")
        with _global_dtype_policy(self.dtype_policy):
            base = _application(backbone, self.image_size_px)
            cut = _feature_layer(base, backbone, self.layer_name)
            self.backbone = keras.Model(base.input, cut.output, name=backbone)
        rows, cols, self.feature_channels = (int(d) for d in self.backbone.output.shape[1:])
        self._grid = TokenGrid(rows, cols)
        self.patch_encoder = PatchEncoder(rows * cols, self.hidden_dim, layer_norm_epsilon, positions, (rows, cols),
                                          dtype=self.dtype_policy, name="patch_encoder")
        self.apply_backbone_training()

    @property
    def layer_name(self):
        """The cut layer, with "" resolved to the backbone's default."""
        return self.cut_layer or BACKBONES[self.backbone_name][2]

    @property
    def token_grid(self):
        return self._grid

    def backbone_parts(self):
        layers = [layer for layer in self.backbone.layers if not isinstance(layer, keras.layers.InputLayer)]
        pattern = _VGG_BLOCK if self.backbone_name.startswith("vgg") else _RESNET_UNIT
        before, blocks, after = [], {}, []
        for layer in layers:
            match = pattern.match(layer.name)
            if match:
                blocks.setdefault(match.group(1), []).append(layer)
            elif pattern is _RESNET_UNIT and layer.name.startswith(("conv1_", "pool1_")):
                before.append(layer)
            else:
                after.append(layer)  # none in these backbones; whatever it were, it would follow the blocks
        return before, list(blocks.values()), after

    def build(self, input_shape=None):
        if not self.patch_encoder.built:  # a caller may have run the projection on cells of its own first
            self.patch_encoder.build((None, self._grid.cells, self.feature_channels))
        self.built = True

    def normalize(self, pixels):
        """The backbone's own `keras.applications.<module>.preprocess_input`, in float32 (the ImageNet
        mean subtraction would lose a pixel level in bfloat16), as a tensor op."""
        module = getattr(keras.applications, BACKBONES[self.backbone_name][1])
        return module.preprocess_input(ops.cast(pixels, "float32"), data_format="channels_last")

    def call(self, pixels, training=None):
        features = self.run_backbone(self.normalize(pixels), training=training)
        cells = ops.reshape(features, (-1, self._grid.cells, self.feature_channels))
        return self.patch_encoder(cells), None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self._grid.cells, self.hidden_dim), None

    def load_pretrained_weights(self):
        """Copies the configured `weights` into the backbone, layer by layer by name.

        Returns:
            A one-line description of what was loaded.

        Raises:
            CheckpointNotFoundError: (one line) the weights file does not exist, or the ImageNet file is
                neither in Keras's cache nor downloadable; the message names the file and its folder.
            ValueError: (one line) the file is not a weights file of this backbone.
        """
        backbone, source = self.backbone_name, self.weights_source
        if not source:
            return f"{backbone} random weights (no weights configured)"
        path = weights_file(backbone, source)
        what = f"{backbone} imagenet weights" if source == "imagenet" else f"{backbone} weights"
        with _global_dtype_policy("float32"):  # the file's values stay exact until they land in this layer
            full = _application(backbone, self.image_size_px)
        try:
            with warnings.catch_warnings():
                # Keras only warns, and keeps the random values, for parts of the model it finds no weights for
                warnings.simplefilter("error", UserWarning)
                full.load_weights(path)  # what keras.applications does with weights=path: .weights.h5 or legacy .h5
        except Exception as error:  # h5py's OSError, Keras's ValueError on a layer-count or shape mismatch, ...
            raise ValueError(_one_line(f"{path} is not a weights file of keras.applications' {backbone} without "
                                       f"its top ({type(error).__name__}: {error})")) from None
        for layer in self.backbone.layers:
            if layer.weights:
                layer.set_weights(full.get_layer(layer.name).get_weights())
        return f"{what} from {path}"

    def get_config(self):
        config = super().get_config()
        config.update({
            "backbone": self.backbone_name, "layer": self.cut_layer, "image_size": self.image_size_px,
            "hidden_dim": self.hidden_dim, "positions": self.positions, "layer_norm_epsilon": self.layer_norm_epsilon,
            "weights": self.weights_source, "train_backbone": self.train_backbone,
            "trainable_blocks": self.trainable_blocks,
        })
        return config
