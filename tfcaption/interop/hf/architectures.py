"""The Hub architectures tfcaption reads, and per architecture which absent tensors are tied to which present one.

A checkpoint names its class in config.json's ``architectures``; files written without it (transformers'
``config.save_pretrained`` on a bare config) are recognised by ``model_type``. ``save_pretrained`` leaves tied
weights out of the weight file: the ``tied`` mapping says where each comes from (absent name -> present name),
used only while the config ties them. ``renamed`` gives older files the names transformers v5 writes (v4's
CLIPVisionModel kept its tower under ``vision_model.``; v5's has none), so one architecture has one naming.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tfcaption.interop.hf.errors import HubCheckpointError

__all__ = ["Architecture", "ARCHITECTURES", "architecture_of"]


@dataclass(frozen=True)
class Architecture:
    """One supported transformers class.

    Args:
        name: the class name config.json's ``architectures`` gives.
        model_type: config.json's ``model_type`` for it.
        tied: absent tensor name -> the tensor it equals, while the config ties word embeddings.
        tie_flag: the config entries (outer, inner) that say whether they are tied; True when absent, as in
            transformers.
        renamed: (old prefix, new prefix) pairs: a file name starting with an old prefix is read under the new.
    """

    name: str
    model_type: str
    tied: dict = field(default_factory=dict)
    tie_flag: tuple = ("tie_word_embeddings",)
    renamed: tuple = ()

    def canonical(self, name: str) -> str:
        """`name` as transformers v5 writes it for this architecture."""
        for old, new in self.renamed:
            if name.startswith(old):
                return new + name[len(old):]
        return name

    def tied_for(self, config: dict) -> dict[str, str]:
        """The tied mapping that applies to `config` (empty when it unties the embeddings)."""
        scope = config
        for key in self.tie_flag[:-1]:
            scope = scope.get(key) or {}
        return dict(self.tied) if scope.get(self.tie_flag[-1], True) else {}


ARCHITECTURES = (
    Architecture(
        "BlipForConditionalGeneration", "blip",
        # The LM head's decoder is the word embedding matrix; its bias is the prediction head's bias.
        tied={
            "text_decoder.cls.predictions.decoder.weight": "text_decoder.bert.embeddings.word_embeddings.weight",
            "text_decoder.cls.predictions.decoder.bias": "text_decoder.cls.predictions.bias",
        },
        tie_flag=("text_config", "tie_word_embeddings")),
    Architecture("CLIPModel", "clip"),
    Architecture("CLIPVisionModel", "clip_vision_model", renamed=(("vision_model.", ""),)),
)


def architecture_of(config: dict, where: str = "config.json") -> Architecture:
    """The supported architecture `config` describes: its ``architectures`` entry, else its ``model_type``.

    Raises:
        HubCheckpointError: (one line, naming `where`) an architecture or model type tfcaption does not read.
    """
    supported = ", ".join(a.name for a in ARCHITECTURES)
    names = config.get("architectures") or []
    if names:
        for arch in ARCHITECTURES:
            if arch.name in names:
                return arch
        raise HubCheckpointError(f"{where}: architecture {', '.join(map(str, names))} is not supported; "
                                 f"tfcaption reads {supported}")
    model_type = config.get("model_type")
    for arch in ARCHITECTURES:
        if arch.model_type == model_type:
            return arch
    raise HubCheckpointError(f"{where}: model_type {model_type!r} (no 'architectures' entry) is not supported; "
                             f"tfcaption reads {supported}")
