"""Hugging Face Hub checkpoints (BLIP captioners, CLIP vision towers) read without torch.

```
sources                   a directory in the Hub's layout, or hf://OWNER/NAME[@REVISION] via huggingface_hub
architectures             the classes read, from config.json; which absent tensors are tied to which
weights                   model.safetensors [sharded] | pytorch_model.bin [sharded] -> float32 numpy by name
tokenizer_files           vocab.txt | tokenizer.json + added tokens, special tokens, lower-casing
image_processor_settings  preprocessor_config.json | v5's processor_config.json -> resize, crop, rescale, normalise
hub_checkpoint            HubCheckpoint: all of the above for one checkpoint
clip_weights              CLIP's vision tower weights (vision_model.* of a CLIPModel, or a CLIPVisionModel)
blip_weights              BLIP's vision tower and text decoder from a checkpoint's config and tensors, and back
errors                    HubCheckpointError, HubFilesNotFoundError (one-line messages)
```

TensorFlow-free: importing this package loads numpy and json only; safetensors and huggingface_hub (the ``hub``
extra) load when a safetensors file or an ``hf://`` source is read.
"""

from tfcaption.interop.hf.errors import HubCheckpointError, HubFilesNotFoundError
from tfcaption.interop.hf.hub_checkpoint import HubCheckpoint

__all__ = ["HubCheckpoint", "HubCheckpointError", "HubFilesNotFoundError"]
