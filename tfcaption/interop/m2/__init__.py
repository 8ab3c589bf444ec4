"""The Meshed-Memory Transformer authors' formats: read, convert and caption with them.

```
vocab              the released vocab.pkl -> token list
convert            state_dict + tokens -> CaptionerBackbone weights -> a tfcaption run directory
features           HDF5 region features (coco_detections.hdf5) and Karpathy splits
captioning         captioning and COCO evaluation from those features (`--features FILE.h5`)
```

The .pth reader (`tfcaption.interop.torch_checkpoint`) and its allow-list unpickler
(`tfcaption.interop.restricted_pickle`) sit one level up: Hugging Face `pytorch_model.bin` files use them too.

This package stays light to import: TensorFlow loads with the modules above, not here.
"""

# The reference evaluation's decoding: beam 5, 20 steps (<eos> included).
REFERENCE_BEAM_SIZE = 5
REFERENCE_STEPS = 20
