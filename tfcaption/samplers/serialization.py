"""Samplers by name or config: `get("beam")`, `get({"class_name": ..., "config": ...})`, `serialize`."""

import keras

from tfcaption.samplers.beam_sampler import BeamSampler
from tfcaption.samplers.generate_beam_sampler import GenerateBeamSampler
from tfcaption.samplers.greedy_sampler import GreedySampler
from tfcaption.samplers.random_sampler import RandomSampler
from tfcaption.samplers.sampler import Sampler
from tfcaption.samplers.top_k_sampler import TopKSampler
from tfcaption.samplers.top_p_sampler import TopPSampler

#: The names `get` and `deserialize` accept, as keras-hub spells them.
NAMES = {
    "beam": BeamSampler,
    "generate_beam": GenerateBeamSampler,
    "greedy": GreedySampler,
    "random": RandomSampler,
    "top_k": TopKSampler,
    "top_p": TopPSampler,
}


def name_of(sampler):
    """The name `get` builds `sampler`'s class from: `name_of(get("top_p")) == "top_p"`."""
    return next(name for name, cls in NAMES.items() if type(sampler) is cls)


def serialize(sampler):
    """A JSON-serialisable dict for `deserialize` (Keras's object format)."""
    return keras.saving.serialize_keras_object(sampler)


def deserialize(config, custom_objects=None):
    """A `Sampler` from `serialize`'s dict, a `{"class_name": "beam", "config": {...}}` dict or a name."""
    if isinstance(config, str):
        return get(config)
    if isinstance(config, dict) and config.get("class_name") in NAMES:
        return NAMES[config["class_name"]].from_config(dict(config.get("config") or {}))
    objects = {cls.__name__: cls for cls in NAMES.values()}
    return keras.saving.deserialize_keras_object(config, module_objects=objects, custom_objects=custom_objects,
                                                 printable_module_name="sampler")


def get(identifier, **kwargs):
    """A sampler from a name (`"greedy"`, `"beam"`, `"generate_beam"`, `"random"`, `"top_k"`, `"top_p"`), a config dict,
    a `Sampler` (returned as is) or None (None).

    `kwargs` are constructor arguments for a name: `get("top_p", p=0.8, seed=1)`.

    Example:
    >>> type(get("beam", num_beams=5)).__name__, get("top_p").p
    ('BeamSampler', 0.9)
    """
    if identifier is None:
        return None
    if isinstance(identifier, Sampler):
        if kwargs:
            raise ValueError("sampler settings go to the sampler's constructor, not beside a sampler object.")
        return identifier
    if isinstance(identifier, str):
        name = identifier.strip().lower().replace("-", "_")
        if name not in NAMES:
            raise ValueError(f"unknown sampler {identifier!r}: expected one of {', '.join(NAMES)}.")
        return NAMES[name](**kwargs)
    if isinstance(identifier, dict):
        if kwargs:
            raise ValueError("give sampler settings inside the config dict, not beside it.")
        return deserialize(identifier)
    if isinstance(identifier, type) and issubclass(identifier, Sampler):
        return identifier(**kwargs)
    raise ValueError(f"cannot interpret {identifier!r} as a sampler: give a name ({', '.join(NAMES)}), a config "
                     "dict or a Sampler.")
