"""The caption language of the `shapes` dataset: one grammar, read both ways.

Why one module for writing and reading captions: the grounded metrics
(`tfcaption.datasets.shapes.grounding`) are only as trustworthy as the parser that
turns a model's caption back into objects and relations. Keeping the
generator (`describe_scene`) and the parser (`parse_caption`) next to the
same word tables means every caption the dataset contains is, by
construction, a sentence the parser reads back exactly; the tests check this
over thousands of generated captions.

The language is small and closed:

    mention   := number? size? colour? shape          "two small red circles"
    relation  := "to the left of" | "left of" | "to the right of" | "right of"
                 | "above" | "below" | "under"
    filler    := there is are and with which that image picture of

A relation links the mention just before it (subject) to the mention just
after it (object): "a red circle above a blue square which is left of a green
star" states (0, above, 1) and (1, left of, 2).
"""

import dataclasses
import unicodedata

SHAPES = ("circle", "square", "triangle", "diamond", "star", "hexagon")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")

NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}

# Surface forms of each relation. Longer
# phrases come first so that the parser matches them greedily.
RELATION_PHRASES = {
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
    "above": ("above",),
    "below": ("below", "under"),
}

# Fraction of (r_a + r_b) by which two centres must differ along an axis for
# the generator to state a relation on that axis. Non-overlapping objects are
# at least r_a + r_b apart, so one axis always differs by at least
# 0.707 * (r_a + r_b): every pair of single objects has a clear relation.
CLEAR_RELATION_FRACTION = 0.6

MAX_CAPTION_WORDS = 24

_PLURALS = {shape + "s": shape for shape in SHAPES}
_COUNTS = {"a": 1, "an": 1, **{word: n for n, word in NUMBER_WORDS.items()}}
# Nouns of the sentence frames ("an image with", "a picture of"): the article
# in front of them does not start an object mention.
_FRAME_NOUNS = frozenset({"image", "picture"})
_FILLERS = frozenset({"there", "is", "are", "and", "with", "which", "that", "of"})
_RELATION_TOKENS = sorted(
    ((tuple(phrase.split()), relation)
     for relation, phrases in RELATION_PHRASES.items() for phrase in phrases),
    key=lambda item: -len(item[0]),
)


@dataclasses.dataclass(frozen=True)
class ObjectMention:
    """One noun phrase of a caption: `count` objects with the stated attributes.

    `size` and `colour` are None when the caption does not state them.
    """

    count: int
    size: str | None
    colour: str | None
    shape: str


@dataclasses.dataclass
class ParsedCaption:
    """What a caption says: its object mentions and the relations between them.

    `relations` holds (subject_index, relation, object_index) triples that
    index into `objects`. `ok` is False when some of the text could not be
    read as the grammar (unknown words, a colour without a shape, a relation
    missing a side, an empty caption); what could be read is still returned.
    """

    objects: list[ObjectMention]
    relations: list[tuple[int, str, int]]
    ok: bool


def normalize_text(text: str) -> str:
    """Lowercases, turns punctuation into spaces and collapses whitespace.

    The rule of `tfcaption.data.tokenizer.normalize_caption` (keep Unicode
    letters, marks and numbers); repeated here so that the grammar stays a
    pure-Python module that generator processes import without TensorFlow.
    """
    kept = "".join(ch if unicodedata.category(ch)[0] in "LMN" else " " for ch in str(text))
    return " ".join(kept.lower().split())


def article(word: str) -> str:
    """The indefinite article for the word that follows it."""
    return "an" if word[:1] in "aeiou" else "a"


def mention_text(count: int, size: str | None, colour: str, shape: str) -> str:
    """Writes a noun phrase: "a small red circle", "an orange star", "three blue stars"."""
    words = [w for w in (size, colour) if w]
    noun = shape if count == 1 else shape + "s"
    determiner = article(words[0] if words else noun) if count == 1 else NUMBER_WORDS[count]
    return " ".join([determiner, *words, noun])


def relation_holds(subject: dict, obj: dict, relation: str, min_gap: float = 0.0) -> bool:
    """Whether `subject` is `relation` `obj`, judged by their centres.

    Args:
        subject, obj: scene objects with "x", "y" (pixels, y grows downward).
        relation: one of RELATIONS.
        min_gap: how far the centres must differ along the relation's axis.
            The generator asks for a clear gap; evaluation uses 0 (the
            relation is true when the centres are on the stated sides).
    """
    dx = obj["x"] - subject["x"]
    dy = obj["y"] - subject["y"]
    offset = {"left of": dx, "right of": -dx, "above": dy, "below": -dy}[relation]
    return offset > min_gap


def parse_caption(text: str) -> ParsedCaption:
    """Reads a caption into object mentions and relations; never raises.

    Robust to model output: repeated words are read once ("a red red circle
    circle" is one red circle), a mention without a number counts one object
    (two when its noun is plural), unknown words are skipped, a mention
    without a shape is dropped, and of two conflicting words the last wins.
    The last three, and a relation missing a side, clear `ok`.
    """
    try:
        tokens = normalize_text(text).split()
    except Exception:  # An object whose str() fails: nothing to read.
        return ParsedCaption([], [], False)
    objects: list[ObjectMention] = []
    relations: list[tuple[int, str, int]] = []
    ok = bool(tokens)
    count = size = colour = None
    pending_relation = None  # (subject_index, relation) waiting for its object.
    previous = None
    i = 0
    while i < len(tokens):
        token = tokens[i]
        relation, length = _match_relation(tokens, i)
        if relation is not None:
            if count is not None or size or colour:
                ok = False  # Modifiers with no shape before a relation.
                count = size = colour = None
            if pending_relation is not None and pending_relation[1] != relation:
                ok = False
            if objects:
                pending_relation = (len(objects) - 1, relation)
            else:
                ok = False
            previous = token
            i += length
            continue
        if token == previous and (token in _COUNTS or token in SIZES or token in COLOURS):
            pass  # A repeated modifier says nothing new.
        elif token in _COUNTS:
            if count is not None or size or colour:
                ok = False
            count = _COUNTS[token]
        elif token in SIZES:
            if size and size != token:
                ok = False
            size = token
        elif token in COLOURS:
            if colour and colour != token:
                ok = False
            colour = token
        elif token in SHAPES or token in _PLURALS:
            shape = _PLURALS.get(token, token)
            repeated = previous in (shape, shape + "s")
            if not (repeated and count is None and not size and not colour):
                if count is None:
                    count = 2 if token in _PLURALS else 1
                objects.append(ObjectMention(count, size, colour, shape))
                if pending_relation is not None:
                    relations.append((pending_relation[0], pending_relation[1], len(objects) - 1))
                    pending_relation = None
                count = size = colour = None
        elif token in _FRAME_NOUNS and count == 1 and not size and not colour:
            count = None  # "an image with": the article belongs to the frame.
        elif token in _FILLERS:
            if count is not None or size or colour:
                ok = False
                count = size = colour = None
        else:
            ok = False  # Unknown word: skip it, keep what came before.
        previous = token
        i += 1
    if count is not None or size or colour or pending_relation is not None:
        ok = False
    return ParsedCaption(objects, relations, ok)


def _match_relation(tokens: list[str], start: int) -> tuple[str | None, int]:
    """The relation whose phrase starts at `tokens[start]`, and its length."""
    for phrase, relation in _RELATION_TOKENS:
        if tuple(tokens[start:start + len(phrase)]) == phrase:
            return relation, len(phrase)
    return None, 0


def describe_scene(objects: list[dict], rng) -> str:
    """Writes one true caption of a scene, mentioning every object.

    Each call draws a paraphrase: whether sizes are stated (identical objects
    are then counted: "two red circles"), the order of the mentions, and
    either a list frame ("there is ...", "an image with ...", "a picture of
    ...", a bare list) or relation clauses ("a ... to the left of a ...",
    "a ... is above a ... which is left of a ..."). A relation is only stated
    when it clearly holds for every object of both mentions. Captions longer
    than MAX_CAPTION_WORDS are redrawn, then shortened to a plain list.

    Args:
        objects: the scene's objects, dicts with shape, colour, size, x, y, radius.
        rng: a `numpy.random.Generator`; the caption is a function of its state.
    """
    for _ in range(8):
        caption = _compose(objects, rng, with_sizes=rng.random() < 0.7, relational=rng.random() < 0.6)
        if len(caption.split()) <= MAX_CAPTION_WORDS:
            return caption
    return _compose(objects, rng, with_sizes=False, relational=False)


def _compose(objects, rng, with_sizes, relational):
    """One caption draw: groups identical objects, orders them, picks a frame."""
    groups = {}
    for obj in objects:
        key = (obj["size"] if with_sizes else None, obj["colour"], obj["shape"])
        groups.setdefault(key, []).append(obj)
    keys = list(groups)
    keys = [keys[i] for i in rng.permutation(len(keys))]
    members = [groups[key] for key in keys]
    phrases = [mention_text(len(m), *key) for key, m in zip(keys, members)]

    clauses, leftovers = [], []
    i = 0
    while relational and i < len(keys):
        first = _clear_relation(members[i], members[i + 1], rng) if i + 1 < len(keys) else None
        if first is None:
            leftovers.append(i)
            i += 1
            continue
        second = _clear_relation(members[i + 1], members[i + 2], rng) if i + 2 < len(keys) else None
        if second is not None and rng.random() < 0.5:
            linker = _pick(rng, ("which", "that")) + " " + _be(members[i + 1])
            clauses.append(f"{phrases[i]} {_phrase(first, rng)} {phrases[i + 1]} "
                           f"{linker} {_phrase(second, rng)} {phrases[i + 2]}")
            i += 3
        else:
            pair = f"{phrases[i]} {_phrase(first, rng)} {phrases[i + 1]}"
            frame = rng.integers(3)
            if frame == 1:
                pair = f"{phrases[i]} {_be(members[i])} {_phrase(first, rng)} {phrases[i + 1]}"
            elif frame == 2:
                pair = f"there {_be(members[i])} {pair}"
            clauses.append(pair)
            i += 2
    if not clauses:
        listed = _join(phrases)
        frame = rng.integers(4)
        if frame == 0:
            return f"there {_be(members[0])} {listed}"
        if frame == 1:
            return f"an image with {listed}"
        if frame == 2:
            return f"a picture of {listed}"
        return listed
    caption = " and ".join(clauses)
    if leftovers:
        caption += f" and there {_be(members[leftovers[0]])} {_join([phrases[j] for j in leftovers])}"
    return caption


def _clear_relation(subjects, objects, rng):
    """A relation that clearly holds from every subject to every object, or None."""
    valid = [
        relation for relation in RELATIONS
        if all(relation_holds(s, o, relation, CLEAR_RELATION_FRACTION * (s["radius"] + o["radius"]))
               for s in subjects for o in objects)
    ]
    return _pick(rng, valid) if valid else None


def _phrase(relation, rng):
    return _pick(rng, RELATION_PHRASES[relation])


def _pick(rng, options):
    return options[rng.integers(len(options))]


def _be(group):
    return "is" if len(group) == 1 else "are"


def _join(phrases):
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]
