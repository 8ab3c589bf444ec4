"""Scoring a split's captions: COCO metrics, grounding, and the image-blind baseline."""

from tfcaption.metrics.coco import caption_metrics
from tfcaption.datasets.shapes.grounding import grounding_scores

METRIC_KEYS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d")
GROUNDING_KEYS = ("grounding_precision", "grounding_recall", "grounding_f1")


def _score(captions, results, use_java, collapse_repeats):
    references = {r["image_id"]: r["references"] for r in results}
    candidates = dict(zip(references, captions))
    scores = caption_metrics(references, candidates, use_java=use_java, collapse_repeats=collapse_repeats)
    scenes = [r.get("scene") for r in results]
    if all(scenes):
        scores.update(grounding_scores(captions, scenes))
    return scores


def evaluate_results(results, blind_caption=None, use_java=None, collapse_repeats=False):
    """Scores `caption_batches` results, beside the blind baseline when given.

    Returns `{"model": {...}, "blind_baseline": {...}}` with BLEU-1..4, METEOR,
    ROUGE-L, CIDEr-D (fractions; CIDEr-D 1.0 = 100) and, when every result has
    a ground-truth scene, grounding precision / recall / F1.
    """
    if not results:
        raise ValueError("Nothing to evaluate: the split produced no decodable images.")
    report = {"model": _score([r["caption"] for r in results], results, use_java, collapse_repeats),
              "images": len(results)}
    if blind_caption is not None:
        report["blind_baseline"] = _score([blind_caption] * len(results), results, use_java, collapse_repeats)
        report["blind_baseline"]["caption"] = blind_caption
    return report
