"""caption_metrics against a direct pycocoevalcap computation, on both the java and no-java paths.

The java calls are slow (PTB tokenizer about 1 s, METEOR about 5 s to start), so the java-path
results are computed once per module in fixtures.
"""

import logging
import math
import shutil

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from tests.helpers.optional import needs_java, skip_without_java
from tfcaption.metrics import coco
from tfcaption.metrics.coco import (
    METRIC_KEYS, caption_metrics, collapse_repeated_words, format_metrics_table,
    ptb_tokenize_python,
)


# COCO-style references (raw: capitals, final periods, commas, clitics, quotes, brackets, hyphens).
REFERENCES = {
    "1": ["A man riding a wave on top of a surfboard.", "A surfer rides a large wave in the ocean.",
          "A man on a surfboard riding a wave.", "Surfer riding a big wave, in the sea.",
          "A person surfing on a large wave."],
    "2": ["Two dogs playing with a frisbee in the grass.", "A dog's mouth holds a red frisbee.",
          "Two dogs run across the yard; one has a frisbee.", "Dogs play in a grassy field.",
          "The dogs aren't fighting, they're playing!"],
    "3": ["A plate of food with broccoli and rice.", "A white plate topped with rice, meat, and "
          "broccoli.", "Food on a plate (broccoli and chicken).", "A close-up of a healthy meal.",
          "There's a plate of rice and vegetables on the table."],
    "4": ["A red double-decker bus driving down a street.", "A bus on the street in the U.S. city.",
          "The big red bus is parked near the curb.", 'A "double decker" bus in London.',
          "A red bus drives past some buildings..."],
    "5": ["A cat sleeping on a laptop keyboard.", "A gray cat lies on a computer.",
          "The cat is napping on the owner's laptop.", "Cat resting on a keyboard -- cute.",
          "A kitten curled up on a black laptop."],
    "6": ["A kitchen with white cabinets and a stove.", "A clean kitchen: stove, sink, cabinets.",
          "An empty kitchen with wooden floors.", "The kitchen has a stainless steel fridge.",
          "Kitchen area with an oven and a microwave."],
}
CANDIDATES = {
    "1": "a man riding a wave on top of a surfboard",  # equal to a reference after tokenisation
    "2": "two dogs playing with a frisbee in a field",
    "3": "a plate of food with rice and broccoli",
    "4": "a red bus driving down a city street",
    "5": "",  # an empty candidate must work
    "6": "a kitchen with a stove and a sink",
}
# Extra caption-like text for the tokeniser comparison (outputs checked against the jar).
TRICKY = [
    "The dog's ball isn't red; it's \"blue\" (mostly) [really].",
    "Two dogs' toys -- and a cat - on the grass... wow!", "I'm gonna say cannot can't won't.",
    "Mr. Smith and Dr. Who at 3.5 p.m. in the U.S. e.g. etc.", "A 10% $5 #1 item & stuff a+b",
    "1,000 people, at 5:30 on 2nd St. and 3rd Ave.", "ALL CAPS SENTENCE!!! what?? ok?!",
    "\u201cCurly\u201d quotes \u2018single\u2019 \u2014 dash\u2026", "no. 5 is the no.",
    "a man ' s hat and 'em", "a b.c. u.s.a. x.y sentence. a.", "  spaces   and\ttabs  ",
    "a man cannot ride a horse", "you gotta see this",
]


@pytest.fixture(scope="module")
def java_tokenized():
    """One PTBTokenizer call on every reference, candidate and tricky caption."""
    skip_without_java()
    request = {("ref", k): [{"caption": c} for c in v] for k, v in REFERENCES.items()}
    request.update({("cand", k): [{"caption": c}] for k, c in CANDIDATES.items()})
    request["tricky"] = [{"caption": c} for c in TRICKY]
    return PTBTokenizer().tokenize(request)


@pytest.fixture(scope="module")
def java_metrics():
    skip_without_java()
    return caption_metrics(REFERENCES, CANDIDATES, use_java=True)


def _direct_scores(gts, res, with_meteor):
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"bleu_{i + 1}": bleu[i] for i in range(4)}
    out["rouge_l"], _ = Rouge().compute_score(gts, res)
    out["cider_d"], _ = Cider().compute_score(gts, res)
    if with_meteor:
        out["meteor"], _ = Meteor().compute_score(gts, res)
    return out


def test_punctuation_list_is_pycocoevalcaps():
    assert coco.PTB_PUNCTUATION == frozenset(ptbtokenizer.PUNCTUATIONS)


def test_python_tokeniser_splits_clitics_drops_punctuation_and_is_idempotent():
    assert ptb_tokenize_python("The dog's ball isn't red.") == "the dog 's ball is n't red"
    assert ptb_tokenize_python("A (big) dog, running!") == "a -lrb- big -rrb- dog running"
    assert ptb_tokenize_python("Mr. Smith can't, 1,000 at 5:30.") == \
        "mr. smith ca n't 1,000 at 5:30"
    assert ptb_tokenize_python("Two dogs' toys -- wow...") == "two dogs toys wow"
    assert ptb_tokenize_python("a man cannot ride") == "a man can not ride"
    assert ptb_tokenize_python("") == "" and ptb_tokenize_python(" ... ! ") == ""
    for text in TRICKY + [c for refs in REFERENCES.values() for c in refs]:
        once = ptb_tokenize_python(text)
        assert ptb_tokenize_python(once) == once  # idempotent


@needs_java
def test_python_tokeniser_equals_ptb(java_tokenized):
    for key, refs in REFERENCES.items():
        assert [ptb_tokenize_python(r) for r in refs] == java_tokenized[("ref", key)]
    for key, cand in CANDIDATES.items():
        assert [ptb_tokenize_python(cand)] == java_tokenized[("cand", key)]
    assert [ptb_tokenize_python(t) for t in TRICKY] == java_tokenized["tricky"]


@needs_java
def test_java_path_equals_direct_pycocoevalcap(java_metrics, java_tokenized):
    gts = {k: java_tokenized[("ref", k)] for k in CANDIDATES}
    res = {k: java_tokenized[("cand", k)] for k in CANDIDATES}
    direct = _direct_scores(gts, res, with_meteor=True)
    assert java_metrics["tokenizer"] == "ptb"
    assert set(java_metrics) == set(METRIC_KEYS) | {"tokenizer"}
    for key in METRIC_KEYS:
        assert java_metrics[key] == pytest.approx(direct[key], abs=1e-12), key
    assert 0.2 < java_metrics["meteor"] < 1.0
    assert 0.5 < java_metrics["bleu_1"] < 1.0 and java_metrics["cider_d"] > 1.0


@needs_java
def test_python_path_close_to_java_path(java_metrics):
    python = caption_metrics(REFERENCES, CANDIDATES, use_java=False)
    assert python["tokenizer"] == "python" and python["meteor"] is None
    # the tokenisations agree on this corpus (test above), so the scores do too
    for key in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider_d"):
        assert python[key] == pytest.approx(java_metrics[key], abs=1e-9), key


def test_bleu_uses_the_closest_reference_length():
    # 4-word candidate, all words in the references; reference lengths 5 and 20. 'closest' picks 5:
    # BLEU-1 = 1 * exp(1 - 5/4); 'average' (12.5) or 'shortest' would give other values.
    result = caption_metrics({"x": ["a dog runs fast today", " ".join(["a dog runs fast"] * 5)]},
                             {"x": "a dog runs fast"}, use_java=False)
    assert result["bleu_1"] == pytest.approx(math.exp(1 - 5 / 4), rel=1e-6)


def test_candidates_equal_to_a_reference_score_one():
    cands = {k: v[1] for k, v in REFERENCES.items()}
    result = caption_metrics(REFERENCES, cands, use_java=False)
    for key in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l"):
        assert result[key] == pytest.approx(1.0, abs=1e-6), key
    assert result["cider_d"] > 2.0


def test_wrong_candidates_score_near_zero():
    cands = {k: "zebra giraffe elephant umbrella kite" for k in REFERENCES}
    result = caption_metrics(REFERENCES, cands, use_java=False)
    assert result["bleu_1"] < 1e-6 and result["bleu_4"] < 1e-6
    assert result["rouge_l"] == 0.0 and result["cider_d"] == 0.0


def test_no_java_found_warns_once_and_skips_meteor(monkeypatch, caplog):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    monkeypatch.setattr(coco, "_NO_JAVA_WARNED", False)
    with caplog.at_level(logging.WARNING, logger="tfcaption.metrics.coco"):
        first = caption_metrics(REFERENCES, CANDIDATES)
        second = caption_metrics(REFERENCES, CANDIDATES)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "METEOR is skipped" in warnings[0].getMessage()
    assert "PTB tokenizer is replaced" in warnings[0].getMessage()
    assert set(first) == set(METRIC_KEYS) | {"tokenizer"}
    assert first["meteor"] is None and first["tokenizer"] == "python"
    assert first == second
    with pytest.raises(RuntimeError, match="java.*not on PATH"):
        caption_metrics(REFERENCES, CANDIDATES, use_java=True)


def test_collapse_repeats_removes_repeated_words_before_scoring():
    refs = {"a": ["A dog runs."]}
    plain = caption_metrics(refs, {"a": "a a dog dog runs"}, use_java=False)
    collapsed = caption_metrics(refs, {"a": "a a dog dog runs"}, use_java=False,
                                collapse_repeats=True)
    assert plain["bleu_1"] == pytest.approx(3 / 5)  # clipped unigram matches 3 of 5
    assert collapsed["bleu_1"] == pytest.approx(1.0)
    assert collapse_repeated_words("a a dog  dog on on the the mat") == "a dog on the mat"
    assert collapse_repeated_words("") == ""


def test_bad_inputs_are_errors_and_empty_captions_still_score():
    with pytest.raises(ValueError, match="'7'"):
        caption_metrics(REFERENCES, {"1": "a man", "7": "a dog", "8": "a cat"}, use_java=False)
    with pytest.raises(ValueError, match="no candidates"):
        caption_metrics(REFERENCES, {}, use_java=False)
    with pytest.raises(ValueError, match="non-empty list"):
        caption_metrics({"1": []}, {"1": "a man"}, use_java=False)
    # all-empty candidates and references still give numbers, not a crash
    empty = caption_metrics({"1": [""]}, {"1": ""}, use_java=False)
    assert empty["cider_d"] == 0.0 and empty["bleu_4"] < 1e-6


@needs_java
def test_meteor_failure_gives_a_clear_message(monkeypatch):
    from pycocoevalcap.meteor import meteor as meteor_module

    monkeypatch.setattr(meteor_module, "METEOR_JAR", "no-such-meteor.jar")
    with pytest.raises(RuntimeError, match="METEOR .* failed.*no-such-meteor.jar"):
        coco._meteor_score({"1": ["a dog"]}, {"1": ["a dog"]})


@needs_java
def test_meteor_reuses_one_java_process_and_restarts_a_dead_one():
    gts, res = {"1": ["a dog runs on grass", "a brown dog"]}, {"1": ["a dog runs"]}
    direct, _ = Meteor().compute_score(gts, res)
    first = coco._meteor_score(gts, res)
    process = coco._meteor().meteor_p
    assert coco._meteor_score(gts, res) == first == pytest.approx(direct, abs=1e-12)
    assert coco._meteor().meteor_p is process and process.poll() is None  # the same process, still running
    process.kill()
    process.wait()
    assert coco._meteor_score(gts, res) == first  # a dead process is replaced, not written to
    assert coco._meteor().meteor_p is not process


def test_metrics_table_is_fixed_width_percent_with_dashes_for_missing_values():
    model = {"bleu_1": 0.808, "bleu_2": 0.6543, "bleu_3": 0.5, "bleu_4": 0.391, "meteor": 0.292,
             "rouge_l": 0.586, "cider_d": 1.312, "tokenizer": "ptb"}
    blind = dict(model, meteor=None, cider_d=0.05, grounding_precision=0.25,
                 grounding_recall=0.5, grounding_f1=1 / 3)
    table = format_metrics_table({"test/model": model, "test/blind_baseline": blind})
    lines = table.split("\n")
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1  # fixed width
    assert lines[0].split()[1:] == ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L",
                                    "CIDEr-D", "Ground-P", "Ground-R", "Ground-F1"]
    assert lines[2].split() == ["test/model", "80.8", "65.4", "50.0", "39.1", "29.2", "58.6",
                                "131.2", "-", "-", "-"]
    assert lines[3].split() == ["test/blind_baseline", "80.8", "65.4", "50.0", "39.1", "-",
                                "58.6", "5.0", "25.0", "50.0", "33.3"]
    assert "Ground" not in format_metrics_table({"val/model": model})
