"""Grounding scores on hand-made scenes, computed by hand; and the blind baseline."""

import json

import pytest

from tfcaption.datasets.shapes import dataset as shapes
from tfcaption.datasets.shapes.grammar import normalize_text
from tfcaption.datasets.shapes.grounding import blind_baseline_caption, grounding_scores


def obj(colour, shape, size="small", x=20.0, y=20.0):
    return {"shape": shape, "colour": colour, "size": size, "x": x, "y": y, "radius": 8.0 if size == "small" else 15.0}


def scene(*objects):
    return {"width": 96, "height": 96, "objects": list(objects)}


RED_LEFT_OF_BLUE = scene(obj("red", "circle", "small", 20, 50), obj("blue", "square", "large", 70, 50))


def scores(caption, truth):
    return grounding_scores([caption], [truth])


def test_perfect_caption_scores_one():
    result = scores("a small red circle to the left of a large blue square", RED_LEFT_OF_BLUE)
    assert result == {"grounding_precision": 1.0, "grounding_recall": 1.0, "grounding_f1": 1.0,
                      "relation_accuracy": 1.0, "parse_failures": 0}


def test_missing_object_halves_recall_only():
    result = scores("a red circle", RED_LEFT_OF_BLUE)
    assert result["grounding_precision"] == 1.0 and result["grounding_recall"] == 0.5
    assert result["grounding_f1"] == pytest.approx(2 / 3)
    assert result["relation_accuracy"] is None


def test_wrong_colour_or_stated_size_matches_nothing():
    for caption in ("a green circle and a red square", "a large red circle and a small blue square"):
        result = scores(caption, RED_LEFT_OF_BLUE)
        assert (result["grounding_precision"], result["grounding_recall"], result["grounding_f1"]) == (0.0, 0.0, 0.0)


def test_counts_expand_into_objects():
    two_red = scene(obj("red", "circle", "small", 20, 20), obj("red", "circle", "large", 60, 60))
    assert scores("two red circles", two_red)["grounding_f1"] == 1.0
    one_red = scene(obj("red", "circle"))
    result = scores("two red circles", one_red)
    assert (result["grounding_precision"], result["grounding_recall"]) == (0.5, 1.0)
    result = scores("three small red circles", two_red)
    assert (result["grounding_precision"], result["grounding_recall"]) == (pytest.approx(1 / 3), 0.5)


def test_matching_is_a_maximum_one_to_one_matching():
    """Greedy matching would give the unsized circle the small one and leave the sized one unmatched."""
    two_red = scene(obj("red", "circle", "small", 20, 20), obj("red", "circle", "large", 60, 60))
    assert scores("a red circle and a small red circle", two_red)["grounding_recall"] == 1.0
    assert scores("a red circle and a red circle and a red circle", two_red)["grounding_precision"] == pytest.approx(2 / 3)


def test_scores_are_micro_averaged_over_the_corpus():
    four = scene(*(obj(c, "star", x=10 + 20 * i) for i, c in enumerate(("red", "green", "blue", "yellow"))))
    result = grounding_scores(["a red circle", "a red star"], [scene(obj("red", "circle")), json.dumps(four)])
    assert result["grounding_precision"] == 1.0
    assert result["grounding_recall"] == pytest.approx(2 / 5)  # Macro-averaging would say 0.625.


def test_relation_accuracy_checks_positions_and_quantifies_plurals():
    captions = [
        "a red circle left of a blue square",         # true
        "a red circle above a blue square",           # same height: false
        "a blue square to the left of a red circle",  # false
        "a green star left of a blue square",         # no green star: false
    ]
    result = grounding_scores(captions, [RED_LEFT_OF_BLUE] * 4)
    assert result["relation_accuracy"] == 0.25
    straddle = scene(obj("red", "circle", "small", 10, 50), obj("red", "circle", "small", 90, 50),
                     obj("blue", "square", "small", 50, 50))
    assert scores("a red circle left of a blue square", straddle)["relation_accuracy"] == 1.0
    assert scores("two red circles left of a blue square", straddle)["relation_accuracy"] == 0.0
    assert scores("a blue square left of two red circles", straddle)["relation_accuracy"] == 0.0


def test_parse_failures_are_counted_and_empty_captions_score_zero():
    result = grounding_scores(["", "a red circle zebra", "a red circle"], [RED_LEFT_OF_BLUE] * 3)
    assert result["parse_failures"] == 2
    assert result["grounding_precision"] == 1.0 and result["grounding_recall"] == pytest.approx(2 / 6)
    assert grounding_scores([""], [RED_LEFT_OF_BLUE])["grounding_f1"] == 0.0


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="scene"):
        grounding_scores(["a red circle"], [""])
    with pytest.raises(ValueError, match="2 captions for 1 scenes"):
        grounding_scores(["a", "b"], [RED_LEFT_OF_BLUE])


def test_generated_references_are_perfect_and_blind_captions_are_not():
    examples = list(shapes.generate_split(shapes.ShapesConfig(num_train=100), "train"))
    captions = [e["captions"][0] for e in examples]
    scenes = [e["scene"] for e in examples]
    assert grounding_scores(captions, scenes)["grounding_f1"] == 1.0
    all_captions = [c for e in examples for c in e["captions"]]
    blind = blind_baseline_caption(all_captions, scenes)
    blind_f1 = grounding_scores([blind] * len(scenes), scenes)["grounding_f1"]
    assert 0.0 < blind_f1 < 0.3
    assert blind in {normalize_text(c) for c in all_captions}  # A training caption, normalised.


def test_blind_baseline_prefers_grounding_over_frequency():
    train = ["A red circle."] * 3 + ["a blue square"] * 2 + ["a purple hexagon"]
    assert blind_baseline_caption(train) == "a red circle"
    blue_scenes = [scene(obj("blue", "square"), obj("green", "star", x=60))] * 4
    assert blind_baseline_caption(train, blue_scenes) == "a blue square"
    assert blind_baseline_caption(train, blue_scenes, top_k=1) == "a red circle"
    with pytest.raises(ValueError):
        blind_baseline_caption(["", "..."])
