"""Pretrained image-encoder backbones in a run: sizes taken from the checkpoint, weights copied in.

A `vit` or `cnn` image encoder with `weights` set is random when the `CaptionerBackbone` is built (every model
is built from its config alone, so runs and exports restore their own weights without the
checkpoint). A new run first takes the backbone's sizes from the checkpoint (`with_checkpoint_sizes`,
so config.json records what was trained), then, when training starts from scratch,
`load_pretrained` copies the checkpoint's weights in.
"""

import dataclasses

from tfcaption.layers.cnn_image_encoder import weights_file
from tfcaption.models.config import CLIP_SIZES, PRETRAINED_TYPES, VIT_SIZES


def pretrained_weights(model_config):
    """The image encoder's `weights` setting, or "" when it has none (random init or no backbone)."""
    part = model_config.image_encoder
    return part.weights if part.type in PRETRAINED_TYPES else ""


def with_checkpoint_sizes(model_config):
    """`model_config` with a `vit` or `clip` image encoder's sizes read from its `weights` checkpoint.

    Sizes left at 0 take the checkpoint's; a size set to another value than the checkpoint's is a
    one-line ValueError (the weights could not be loaded). Other configs are returned unchanged, once a
    `cnn` encoder's weights file is found (or downloaded), so a missing file stops a run before any work.

    Raises:
        CheckpointNotFoundError: the checkpoint is neither on disk nor downloadable.
        ValueError: the file is not a ViT checkpoint, or its sizes contradict the config.
    """
    part = model_config.image_encoder
    if part.type == "cnn" and part.weights:
        weights_file(part.backbone, part.weights)
    if part.type == "clip" and part.weights:
        return model_config.replace(image_encoder=_with_clip_checkpoint(part))
    if part.type != "vit" or not part.weights or all(getattr(part, name) for name in VIT_SIZES):
        return model_config  # (sizes all given: `load_pretrained` checks them against the file)
    from tfcaption.models.vit import checkpoint_path, read_npz

    checkpoint = read_npz(checkpoint_path(part.weights))
    found = dict(checkpoint.backbone_kwargs())
    found["width"] = found.pop("hidden_dim")
    conflicts = [f"{name}={getattr(part, name)} (the file has {found[name]})" for name in VIT_SIZES
                 if getattr(part, name) and getattr(part, name) != found[name]]
    if conflicts:
        raise ValueError(f"model.image_encoder sizes do not fit the ViT checkpoint {checkpoint.source}: "
                         f"{', '.join(conflicts)}; leave them at 0 to take the file's.")
    part = dataclasses.replace(part, **found, architecture=checkpoint.architecture or "custom")
    return model_config.replace(image_encoder=part)


def _with_clip_checkpoint(part):
    """A `clip` part with the checkpoint's sizes, activation, epsilon and normalisation (see `ClipConfig`)."""
    from tfcaption.data.hf_image_processing import read_image_processor_config
    from tfcaption.interop.hf.clip_weights import clip_checkpoint_dir, clip_vision_arguments, read_clip_checkpoint

    directory = clip_checkpoint_dir(part.weights)
    found = clip_vision_arguments(read_clip_checkpoint(directory, weights=False)[0])
    found = dict(patch_size=found["patch_size"], width=found["hidden_dim"], num_heads=found["num_heads"],
                 num_layers=found["num_layers"], mlp_dim=found["intermediate_dim"], image_size=found["image_size"],
                 hidden_act=found["hidden_act"], layer_norm_epsilon=found["layer_norm_epsilon"])
    conflicts = [f"{name}={getattr(part, name)} (the file has {found[name]})" for name in CLIP_SIZES
                 if getattr(part, name) and getattr(part, name) != found[name]]
    if part.image_size and part.image_size != found["image_size"]:
        conflicts.append(f"image_size={part.image_size} (the file has {found['image_size']}; position embeddings "
                         "are not resized)")
    if conflicts:
        raise ValueError(f"model.image_encoder sizes do not fit the CLIP checkpoint {part.weights}: "
                         f"{', '.join(conflicts)}; leave them at 0 to take the file's.")
    try:
        processor = read_image_processor_config(directory)
        found.update(image_mean=tuple(processor["image_mean"]), image_std=tuple(processor["image_std"]))
    except FileNotFoundError:
        pass  # no processor config: OpenAI's mean and std stay
    return dataclasses.replace(part, **found, architecture="custom")


def load_pretrained(model):
    """Copies the configured checkpoint into `model`'s image-encoder backbone.

    Returns:
        A one-line description of what was loaded, or None when the model has no pretrained weights.
    """
    weights = pretrained_weights(model.config)
    if not weights:
        return None
    encoder = model.image_encoder
    if model.config.image_encoder.type == "cnn":
        return encoder.load_pretrained_weights()
    if model.config.image_encoder.type == "clip":
        from tfcaption.interop.hf.clip_weights import clip_checkpoint_dir, load_clip_vision_weights, read_clip_checkpoint

        load_clip_vision_weights(encoder.backbone, read_clip_checkpoint(clip_checkpoint_dir(weights))[1])
        return f"CLIP vision weights ({model.config.image_encoder.output_layer} layer) from {weights}"
    from tfcaption.models.vit import checkpoint_path, load_npz_weights, read_npz

    checkpoint = load_npz_weights(encoder.backbone, read_npz(checkpoint_path(weights)))
    size = encoder.backbone.image_size
    resized = "" if checkpoint.image_size == size else (
        f", position embeddings resized {checkpoint.grid[0]}x{checkpoint.grid[1]} -> "
        f"{encoder.backbone.grid[0]}x{encoder.backbone.grid[1]}")
    return f"ViT weights ({checkpoint.architecture or 'custom sizes'}) from {checkpoint.source}{resized}"


def with_sizes_of(model_config, run_model_config):
    """`model_config` with the `vit` / `clip` sizes it leaves at 0 taken from a run's saved config (which
    `with_checkpoint_sizes` filled), so a resumed run is compared with what it trained."""
    part, saved = model_config.image_encoder, run_model_config.image_encoder
    if part.type not in ("vit", "clip") or saved.type != part.type:
        return model_config
    sizes = VIT_SIZES if part.type == "vit" else CLIP_SIZES + ("image_size",)  # a clip image_size 0 is the file's
    filled = {name: getattr(part, name) or getattr(saved, name) for name in sizes}
    if all(filled[name] == getattr(saved, name) for name in sizes):
        filled["architecture"] = saved.architecture
        if part.type == "clip":  # read from the checkpoint with the sizes
            filled.update({name: getattr(saved, name) for name in ("hidden_act", "layer_norm_epsilon", "image_mean",
                                                                   "image_std")})
    return model_config.replace(image_encoder=dataclasses.replace(part, **filled))
