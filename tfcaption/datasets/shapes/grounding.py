"""Grounded scores for `shapes` captions: what a caption gets right about the scene.

Why: BLEU or CIDEr reward sounding like the references; on `shapes` we know
the truth of every image, so a caption can be checked object by object. Each
caption is parsed with `tfcaption.datasets.shapes.grammar.parse_caption`, each
mention is expanded by its count into predicted objects ("two red circles"
is two objects), and predicted objects are matched one-to-one to the scene's
objects. A predicted object matches a true one when colour and shape agree
and, if the caption states a size, the size agrees too; a mention without a
colour matches nothing.

Scores are micro-averaged over the corpus (matched, predicted and true
objects are summed over images before dividing), so a long scene weighs more
than a one-object scene, as each object is one decision.

Example:

```python
grounding_scores(["two red circles"], [{"objects": [
    {"shape": "circle", "colour": "red", "size": "small", "x": 20, "y": 20, "radius": 8},
    {"shape": "circle", "colour": "red", "size": "large", "x": 60, "y": 60, "radius": 15}]}])
# {"grounding_precision": 1.0, "grounding_recall": 1.0, "grounding_f1": 1.0, ...}
```
"""

import collections
import json

from tfcaption.datasets.shapes.grammar import normalize_text, parse_caption, relation_holds


def grounding_scores(captions: list[str], scenes: list[str | dict]) -> dict:
    """Grounding precision, recall, F1 and relation accuracy of captions.

    Args:
        captions: one caption per image (raw text; normalised here).
        scenes: each image's scene, as the JSON text of the example's "scene"
            field or as the decoded dict.

    Returns:
        A dict with
        - grounding_precision: matched / predicted objects (0.0 when none predicted),
        - grounding_recall: matched / true objects,
        - grounding_f1: their harmonic mean,
        - relation_accuracy: the fraction of stated relations that are true
          (None when no caption states one), see `_relation_true`,
        - parse_failures: how many captions the grammar could not fully read.
    """
    if len(captions) != len(scenes):
        raise ValueError(f"Got {len(captions)} captions for {len(scenes)} scenes.")
    return _score([parse_caption(caption) for caption in captions], [_objects(s) for s in scenes])


def blind_baseline_caption(train_captions: list[str], train_scenes: list[str | dict] | None = None,
                           top_k: int = 50, max_scenes: int = 500) -> str:
    """The best caption a model could give without looking at the image.

    A model that ignores its input can at best emit one fixed caption, and the
    most useful fixed caption is a frequent one that names objects likely to
    be there. This takes the `top_k` most frequent normalised training
    captions and, given training scenes, returns the one with the highest
    grounding F1 against up to `max_scenes` of them (evenly spaced, so the
    choice is deterministic); ties and the no-scenes case go to the most
    frequent. Reporting a model's scores beside this caption's shows how much
    of them comes from the image.
    """
    counts = collections.Counter(normalize_text(caption) for caption in train_captions)
    counts.pop("", None)
    if not counts:
        raise ValueError("blind_baseline_caption needs at least one non-empty training caption.")
    candidates = [caption for caption, _ in counts.most_common(top_k)]
    if not train_scenes:
        return candidates[0]
    step = max(1, len(train_scenes) // max_scenes)
    scenes = [_objects(scene) for scene in train_scenes[::step][:max_scenes]]
    best, best_f1 = candidates[0], -1.0
    for caption in candidates:
        f1 = _score([parse_caption(caption)] * len(scenes), scenes)["grounding_f1"]
        if f1 > best_f1:
            best, best_f1 = caption, f1
    return best


def _score(parsed_captions, scene_objects):
    matched = predicted = true = 0
    relations_stated = relations_true = failures = 0
    for parsed, objects in zip(parsed_captions, scene_objects):
        failures += not parsed.ok
        guesses = [mention for mention in parsed.objects for _ in range(mention.count)]
        predicted += len(guesses)
        true += len(objects)
        matched += _max_matching(guesses, objects)
        for relation in parsed.relations:
            relations_stated += 1
            relations_true += _relation_true(parsed, relation, objects)
    precision = matched / predicted if predicted else 0.0
    recall = matched / true if true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "grounding_precision": precision,
        "grounding_recall": recall,
        "grounding_f1": f1,
        "relation_accuracy": relations_true / relations_stated if relations_stated else None,
        "parse_failures": failures,
    }


def _matches(mention, obj):
    return (mention.colour == obj["colour"] and mention.shape == obj["shape"]
            and mention.size in (None, obj["size"]))


def _max_matching(guesses, objects):
    """Size of a maximum one-to-one matching (Kuhn's augmenting paths; exact)."""
    owner = [None] * len(objects)  # owner[j]: the guess matched to object j.

    def augment(i, visited):
        for j, obj in enumerate(objects):
            if j not in visited and _matches(guesses[i], obj):
                visited.add(j)
                if owner[j] is None or augment(owner[j], visited):
                    owner[j] = i
                    return True
        return False

    return sum(augment(i, set()) for i in range(len(guesses)))


def _relation_true(parsed, relation, objects):
    """Whether a stated relation holds for the objects its two mentions name.

    A mention names every scene object that matches it. A singular mention
    ("a red circle") needs the relation to hold for at least one of them, a
    plural one ("two red circles") for all of them; a mention that names no
    object makes the relation false. Positions are compared by centre, with
    no minimum gap (the generator only states relations with a clear gap).
    """
    subject_index, name, object_index = relation
    subject, obj = parsed.objects[subject_index], parsed.objects[object_index]
    subjects = [o for o in objects if _matches(subject, o)]
    targets = [o for o in objects if _matches(obj, o)]
    if not subjects or not targets:
        return False
    for_subjects = any if subject.count == 1 else all
    for_targets = any if obj.count == 1 else all
    return for_subjects(for_targets(relation_holds(s, t, name) for t in targets) for s in subjects)


def _objects(scene):
    """The object list of a scene given as JSON text or a dict."""
    if isinstance(scene, (str, bytes)):
        if not scene:
            raise ValueError("Grounding scores need each image's scene; got an empty scene "
                             "(only datasets with ground truth, like shapes, have one).")
        scene = json.loads(scene)
    return scene["objects"]
