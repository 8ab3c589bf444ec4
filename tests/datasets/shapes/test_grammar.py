"""The shapes caption grammar: exact read-back of its own sentences, robust reading of model output."""

import random

import numpy as np
import pytest

from tfcaption.datasets.shapes import grammar
from tfcaption.datasets.shapes.grammar import ObjectMention, parse_caption


def test_reads_relation_chains_and_counts():
    parsed = parse_caption("Two small red circles above an orange star, which is to the left of a large blue square.")
    assert parsed.ok
    assert parsed.objects == [
        ObjectMention(2, "small", "red", "circle"),
        ObjectMention(1, None, "orange", "star"),
        ObjectMention(1, "large", "blue", "square"),
    ]
    assert parsed.relations == [(0, "above", 1), (1, "left of", 2)]


@pytest.mark.parametrize("caption, relations", [
    ("there is a green hexagon under three purple diamonds", [(0, "below", 1)]),
    ("a red star is right of a blue circle and a green square to the right of a yellow triangle",
     [(0, "right of", 1), (2, "right of", 3)]),
    ("a red star left of a blue circle and there are two green squares", [(0, "left of", 1)]),
])
def test_relations_link_the_mentions_around_them(caption, relations):
    parsed = parse_caption(caption)
    assert parsed.ok and parsed.relations == relations


def test_list_frames_do_not_count_their_article_as_an_object():
    for frame in ("an image with", "a picture of", "there are", ""):
        parsed = parse_caption(f"{frame} two yellow stars, a small green diamond and four circles")
        assert parsed.ok, frame
        assert [(m.count, m.colour, m.shape) for m in parsed.objects] == [
            (2, "yellow", "star"), (1, "green", "diamond"), (4, None, "circle")]
        assert parsed.relations == []


@pytest.mark.parametrize("text", ["", "   ", "...", None, 12, "<unk> <unk> <eos>", "the the the"])
def test_unreadable_text_gives_nothing_and_not_ok(text):
    parsed = parse_caption(text)
    assert parsed.objects == [] and parsed.relations == [] and not parsed.ok


@pytest.mark.parametrize("text, objects, relations, ok", [
    ("a a red red circle circle", [ObjectMention(1, None, "red", "circle")], [], True),
    ("red circle", [ObjectMention(1, None, "red", "circle")], [], True),
    ("blue squares", [ObjectMention(2, None, "blue", "square")], [], True),
    ("a red xyzzy circle", [ObjectMention(1, None, "red", "circle")], [], False),
    ("a red blue circle", [ObjectMention(1, None, "blue", "circle")], [], False),
    ("two red", [], [], False),
    ("above a red circle", [ObjectMention(1, None, "red", "circle")], [], False),
    ("a red circle above", [ObjectMention(1, None, "red", "circle")], [], False),
    ("a red circle above above a star", [ObjectMention(1, None, "red", "circle"), ObjectMention(1, None, None, "star")],
     [(0, "above", 1)], True),
    ("a small red above a star", [ObjectMention(1, None, None, "star")], [], False),
    ("a red circle to the a star", [ObjectMention(1, None, "red", "circle"), ObjectMention(1, None, None, "star")],
     [], False),
])
def test_reads_what_it_can_of_broken_captions(text, objects, relations, ok):
    parsed = parse_caption(text)
    assert (parsed.objects, parsed.relations, parsed.ok) == (objects, relations, ok)


def test_never_raises_on_random_token_soup():
    vocabulary = (list(grammar.SHAPES) + [s + "s" for s in grammar.SHAPES] + list(grammar.COLOURS)
                  + ["small", "large", "a", "an", "two", "four", "to", "the", "left", "right", "of", "above",
                     "below", "is", "and", "which", "image", "zebra", "<unk>", ",", "."])
    rng = random.Random(0)
    for _ in range(3000):
        text = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(0, 30)))
        parsed = parse_caption(text)
        assert all(m.count >= 1 and m.shape in grammar.SHAPES for m in parsed.objects)
        for subject, relation, obj in parsed.relations:
            assert 0 <= subject < obj < len(parsed.objects) and relation in grammar.RELATIONS


def test_normalisation_follows_the_tokenizer_rule():
    from tfcaption.data.tokenizer import normalize_caption

    for text in ["A Red-Circle, ABOVE a blue_square!", "  two\tSTARS.\n", "an orange (small) star;", "Ça va"]:
        assert grammar.normalize_text(text) == normalize_caption(text)
    assert parse_caption("A Red-Circle.").objects == [ObjectMention(1, None, "red", "circle")]


def test_mention_text_picks_a_or_an_and_pluralises_counts():
    assert grammar.mention_text(1, None, "orange", "circle") == "an orange circle"
    assert grammar.mention_text(1, "large", "orange", "circle") == "a large orange circle"
    assert grammar.mention_text(3, "small", "blue", "star") == "three small blue stars"
    assert grammar.mention_text(1, None, "red", "hexagon") == "a red hexagon"


def test_relation_holds_compares_centres_with_a_gap():
    a, b = {"x": 10.0, "y": 50.0}, {"x": 30.0, "y": 20.0}
    assert grammar.relation_holds(a, b, "left of") and grammar.relation_holds(b, a, "right of")
    assert grammar.relation_holds(b, a, "above") and grammar.relation_holds(a, b, "below")
    assert not grammar.relation_holds(a, b, "right of") and not grammar.relation_holds(a, b, "above")
    assert grammar.relation_holds(a, b, "left of", min_gap=19.0)
    assert not grammar.relation_holds(a, b, "left of", min_gap=21.0)


def test_describe_scene_reads_back_exactly_and_stays_short():
    """Crowded scenes of six objects, with duplicates, still give short, exact captions."""
    objects = [
        {"shape": "circle", "colour": "red", "size": "small", "x": 15.0, "y": 15.0, "radius": 8.0},
        {"shape": "circle", "colour": "red", "size": "small", "x": 50.0, "y": 15.0, "radius": 8.0},
        {"shape": "circle", "colour": "red", "size": "large", "x": 80.0, "y": 20.0, "radius": 15.0},
        {"shape": "star", "colour": "orange", "size": "small", "x": 15.0, "y": 80.0, "radius": 8.0},
        {"shape": "hexagon", "colour": "blue", "size": "large", "x": 50.0, "y": 70.0, "radius": 15.0},
        {"shape": "triangle", "colour": "green", "size": "small", "x": 85.0, "y": 85.0, "radius": 8.0},
    ]
    rng = np.random.default_rng(0)
    for _ in range(200):
        caption = grammar.describe_scene(objects, rng)
        assert len(caption.split()) <= grammar.MAX_CAPTION_WORDS, caption
        parsed = parse_caption(caption)
        assert parsed.ok, caption
        assert sum(m.count for m in parsed.objects) == 6, caption
        counts = {(m.size, m.colour, m.shape): m.count for m in parsed.objects}
        assert counts.get(("small", "red", "circle"), 2) == 2 and counts.get((None, "red", "circle"), 3) == 3
