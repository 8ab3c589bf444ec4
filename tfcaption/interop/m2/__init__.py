"""The Meshed-Memory Transformer authors' formats: read, convert and caption with them.

```
restricted_pickle  the allow-list unpickler both readers share (no torch, no arbitrary globals)
checkpoint         the released .pth (legacy and zip serialisations) -> numpy state_dict
vocab              the released vocab.pkl -> token list
convert            state_dict + tokens -> CaptionerBackbone weights -> a tfcaption run directory
features           HDF5 region features (coco_detections.hdf5) and Karpathy splits
captioning         captioning and COCO evaluation from those features (`--features FILE.h5`)
```

This package stays light to import: TensorFlow loads with the modules above, not here.
"""

# The reference evaluation's decoding: beam 5, 20 steps (<eos> included).
REFERENCE_BEAM_SIZE = 5
REFERENCE_STEPS = 20
