"""TrainConfig fields that are derived rather than stored."""

from tfcaption.training.config import TrainConfig


def test_export_name_follows_the_dataset_and_run_unless_named():
    assert TrainConfig().export_name == "shapes_m2_small"  # the default run's SavedModel
    assert TrainConfig(data="data/coco-karpathy", output_dir="runs/coco-m2").export_name == "coco-m2"
    assert TrainConfig(data="folder:x", output_dir="runs/my photos!/").export_name == "my_photos"
    assert TrainConfig(data="folder:x", output_dir="/").export_name == "captioner"
    assert TrainConfig(data="folder:x", model_name="mine").export_name == "mine"
