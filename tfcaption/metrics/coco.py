"""The standard COCO caption metrics, computed the way published captioning numbers are.

Captioning papers (M2 included) report BLEU-1..4, METEOR, ROUGE-L and CIDEr-D as computed by the
coco-caption toolkit, packaged as `pycocoevalcap` 1.2. Small differences in tokenisation or in the
CIDEr document frequencies move these numbers by whole points, so this module does not re-implement
the scorers: it prepares the inputs exactly as the toolkit expects and calls its scorers.

What is computed (all values are fractions, CIDEr-D on its usual scale where 1.0 is reported as 100):

* Tokenisation: the Stanford PTBTokenizer (CoreNLP 3.4.1, run through java by
  `pycocoevalcap.tokenizer.ptbtokenizer.PTBTokenizer`, lowercased), then removal of the punctuation
  tokens listed in that wrapper (`PTB_PUNCTUATION`). References and candidates go through ONE java call.
* BLEU-1..4: `pycocoevalcap.bleu.Bleu(4)`, corpus level. Its `compute_score` passes
  `option='closest'` to the scorer (the effective reference length of each candidate is the closest
  reference length, the shorter on ties), which is what coco-caption and M2 report; we rely on that
  default and check it in the tests.
* METEOR 1.5: `pycocoevalcap.meteor.Meteor` (java, `-l en -norm`), the corpus-level value the jar
  reports for the aggregated statistics (not the mean of per-image scores).
* ROUGE-L: `pycocoevalcap.rouge.Rouge` (LCS F-measure with beta 1.2, mean over images).
* CIDEr-D: `pycocoevalcap.cider.Cider`. Despite its name, its scorer (cider_scorer.py) implements
  CIDEr-D: n-grams n = 1..4 averaged, tf-idf vectors with idf = log(#images) - log(max(1, df)), the
  candidate's weights clipped to the reference's (`min(vec_hyp, vec_ref) * vec_ref`), a Gaussian
  length penalty with sigma = 6 on the length difference, the mean over references, times 10.
  Document frequencies come from the evaluated images' references, one document per image.
  (Checked by reading pycocoevalcap 1.2's cider/cider_scorer.py.)
* SPICE is NOT computed: pycocoevalcap's SPICE downloads Stanford CoreNLP models on first use and
  cannot run offline.

Without java (none on PATH, or ``use_java=False``) METEOR is reported as None and the PTB tokenizer is
replaced by `ptb_tokenize_python`, a pure-Python re-statement of the PTB rules that matter for captions
(see its docstring). BLEU, ROUGE-L and CIDEr-D are then computed by the same pycocoevalcap scorers
on that tokenisation; the result's ``"tokenizer"`` entry says which tokenisation was used so that
numbers from the two paths are never mixed up silently.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import numbers
import re
import shutil
from collections.abc import Mapping

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

logger = logging.getLogger(__name__)

METRIC_KEYS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d")

# The tokens pycocoevalcap's PTBTokenizer wrapper drops after tokenising (its PUNCTUATIONS list, in
# tokenizer/ptbtokenizer.py). Note that the wrapper runs the tokenizer with -lowerCase, which also
# lowercases the bracket tokens to "-lrb-" etc., so the upper-case bracket entries never match and
# brackets survive as "-lrb-"/"-rrb-"... tokens in the official scores; the Python tokeniser keeps
# that behaviour.
PTB_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
     ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

# Words the PTB lexer keeps with their final period (checked against the CoreNLP 3.4.1 jar). Words
# not listed (e.g. "no", "min", "lbs", "tv") lose the period like any sentence-final word.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st ave blvd rd mt ft jr sr inc co corp ltd vs etc jan feb mar apr jun jul "
    "aug sep sept oct nov dec gen sen rep gov lt col sgt capt dept est sq".split()
)
# Words the PTB lexer splits in two ("cannot" -> "can not").
_SPLIT_WORDS = {
    "cannot": "can not", "gonna": "gon na", "gotta": "got ta", "wanna": "wan na",
    "lemme": "lem me", "gimme": "gim me", "'tis": "'t is", "'twas": "'t was",
}
# Tokens that start with an apostrophe but are words, not opening quotes.
_APOSTROPHE_WORDS = frozenset(["'s", "'re", "'ve", "'ll", "'d", "'m", "'em", "'n'", "'n", "'t"])
_BRACKETS = {"(": " -lrb- ", ")": " -rrb- ", "[": " -lsb- ", "]": " -rsb- ",
             "{": " -lcb- ", "}": " -rcb- "}
_BRACKET_TOKENS = frozenset(token.strip() for token in _BRACKETS.values())
# Unicode punctuation the PTB lexer normalises to its ASCII forms.
_UNICODE = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
    "\u2013": " -- ", "\u2014": " -- ", "\u2015": " -- ", "\u2026": " ... ",
    "\u00a3": " # ", "\u20ac": " $ ", "\u00bd": "1/2", "\u00a0": " ",
    "`": " ` ", **_BRACKETS,
})
_CLEAN = re.compile(r"[a-z0-9 ]*")
_ELLIPSIS = re.compile(r"\.{3,}")
_DASHES = re.compile(r"-{2,}")
_BANGS = re.compile(r"[!?]+")
_SYMBOLS = re.compile(r"[;&=%$#\"]|(?<=\w)\+(?=\w)")
_COMMA_COLON = re.compile(r"(?<!\d)(?:,|:(?!//))|(?:,|:(?!//))(?!\d)")  # not in 1,000 / 5:30 / URLs
_DIGIT_QUOTE = re.compile(r"(?<=\d)'(?=\d)")
_CONTRACTION = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
_ACRONYM = re.compile(r"(?:[^\W\d_]\.)+")

_NO_JAVA_WARNED = False


def _split_chunk(chunk: str, next_chunk: str) -> list[str]:
    """PTB-split one whitespace-free chunk; punctuation that PTB would emit and the wrapper would
    drop ('.', "'", '`', '-') is dropped here directly."""
    if chunk in _SPLIT_WORDS:
        return _SPLIT_WORDS[chunk].split()
    if chunk in _BRACKET_TOKENS:
        return [chunk]
    if "://" in chunk or chunk.startswith("www."):
        return [chunk]  # URLs stay whole
    # Opening quotes (and leading hyphens before a word) are split off and dropped.
    while chunk and chunk[0] in "'-" and chunk not in _APOSTROPHE_WORDS:
        if chunk[0] == "'" and chunk[1:2].isdigit():
            break  # "'90s"
        if chunk[0] == "-" and not chunk[1:2].isalpha():
            break  # "-5"
        chunk = chunk[1:]
    # Closing quotes, hyphens and periods are split off and dropped, unless the period belongs to an
    # abbreviation or an acronym ("mr.", "u.s.", "p.m.", a single letter, "no." before a number).
    while chunk:
        if chunk[-1] in "'-" and chunk not in _APOSTROPHE_WORDS:
            chunk = chunk[:-1]
        elif chunk[-1] == "." and chunk != "...":
            base = chunk[:-1]
            if (base in _ABBREVIATIONS or _ACRONYM.fullmatch(chunk)
                    or (base == "no" and next_chunk[:1].isdigit())):
                break
            chunk = base
        else:
            break
    if not chunk:
        return []
    match = _CONTRACTION.match(chunk)
    if match and chunk not in _APOSTROPHE_WORDS:
        return [match.group(1), match.group(2)]
    return [chunk]


def ptb_tokenize_python(caption: str) -> str:
    """Tokenise one caption the way pycocoevalcap's PTBTokenizer wrapper does, without java.

    Returns the space-joined lowercase tokens with the wrapper's punctuation tokens removed, so its
    output can be fed to the pycocoevalcap scorers directly. The rules mirror what Stanford
    CoreNLP 3.4.1's PTBTokenizer (``-preserveLines -lowerCase``) does to caption-like text, each
    checked against the jar:

    * lowercase; unicode quotes/dashes/ellipsis normalised (curly quotes -> ASCII, dashes -> "--");
    * sentence punctuation (. , ; : ! ? ... -- and quotes) split off and dropped; runs such as
      "!!!" or "?!" stay as tokens because the wrapper only drops single "!" and "?";
    * commas and colons inside numbers stay ("1,000", "5:30"), internal hyphens and periods stay
      ("black-and-white", "3.5", "cat.the");
    * the period stays on known abbreviations and acronyms ("mr.", "st.", "u.s.", "p.m.");
    * clitics are split: "dog's" -> "dog 's", "isn't" -> "is n't", "can't" -> "ca n't",
      "cannot" -> "can not", "gonna" -> "gon na"; a plural possessive apostrophe is dropped;
    * brackets become "-lrb-", "-rrb-", "-lsb-", ... and are KEPT: the wrapper lowercases them and
      then fails to match its upper-case "-LRB-" entries (a quirk of the official scores);
    * "&", "$", "#", "%", "=", "+" (between words) become separate tokens.

    Not reproduced: emoticons, e-mail/URL corner cases, rare unicode symbols and the lexer's less
    common abbreviations; on plain caption text the output equals the jar's (see the tests).
    Applying the function to its own output changes nothing.

    Args:
        caption: raw caption text.

    Returns:
        The tokenised caption, tokens separated by single spaces ("" when nothing is left).
    """
    text = caption.lower()
    if _CLEAN.fullmatch(text):  # fast path for decoder output: only "cannot"-like words to split
        words = text.split()
        if not any(word in _SPLIT_WORDS for word in words):
            return " ".join(words)
    text = " ".join(text.splitlines()).translate(_UNICODE)
    text = _ELLIPSIS.sub(" ... ", text)
    text = _DASHES.sub(" -- ", text)
    text = _BANGS.sub(lambda m: " " + m.group(0) + " ", text)
    text = _SYMBOLS.sub(lambda m: " " + m.group(0) + " ", text)
    text = _COMMA_COLON.sub(lambda m: " " + m.group(0) + " ", text)
    text = _DIGIT_QUOTE.sub(" ' ", text)
    chunks = text.split()
    tokens: list[str] = []
    for i, chunk in enumerate(chunks):
        next_chunk = chunks[i + 1] if i + 1 < len(chunks) else ""
        tokens.extend(_split_chunk(chunk, next_chunk))
    return " ".join(t for t in tokens if t not in PTB_PUNCTUATION and t not in ('"', "``", "''"))


def collapse_repeated_words(caption: str) -> str:
    """Collapse consecutive repeated words ("a a dog" -> "a dog").

    The M2 reference evaluation does this to the decoded words before PTB tokenisation (repetition
    is a typical failure of XE-trained decoders, and collapsing it inflates the scores slightly), so
    tfcaption offers it as an option and reports both. Words are whitespace-separated and compared
    exactly, as in the reference.
    """
    return " ".join(word for word, _ in itertools.groupby(caption.split()))


def java_available() -> bool:
    """Whether a `java` executable is on PATH (needed for PTB tokenisation and METEOR)."""
    return shutil.which("java") is not None


def _one_line(text: str) -> str:
    # The PTB wrapper joins all captions with "\n" and reads the output back line by line, so any
    # line break inside a caption (the wrapper only replaces "\n") would shift every later caption.
    return " ".join(text.splitlines())


def _ptb_tokenize_java(captions: dict) -> dict:
    """Tokenise {key: [text, ...]} with the Stanford PTBTokenizer in one java call."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    request = {key: [{"caption": _one_line(t)} for t in texts] for key, texts in captions.items()}
    try:
        result = PTBTokenizer().tokenize(request)
    except OSError as error:  # e.g. the wrapper writes its temporary file next to the jar
        raise RuntimeError(
            "The Stanford PTB tokenizer (java, run by pycocoevalcap) could not run: "
            f"{error}. It needs `java` on PATH and write access to the pycocoevalcap/tokenizer "
            "folder; pass use_java=False to use the pure-Python tokenisation instead."
        ) from error
    for key, texts in captions.items():
        if len(result.get(key, ())) != len(texts):
            raise RuntimeError(
                "The Stanford PTB tokenizer (java) returned fewer lines than captions sent "
                "(see its message on stderr); check that `java -version` works, or pass "
                "use_java=False to use the pure-Python tokenisation instead."
            )
    return result


# One METEOR java process per Python process, reused by every score: starting it (the JVM and the jar's
# paraphrase table) costs several times what scoring 1,000 captions does (docs/results.md), and
# a run scores four sets (test and novel, model and blind baseline). Keyed by the jar pycocoevalcap names.
_meteor_processes = {}


def _close_meteor_processes():
    for meteor in _meteor_processes.values():
        _stop_meteor(meteor)
    _meteor_processes.clear()


atexit.register(_close_meteor_processes)


def _stop_meteor(meteor):
    # Meteor.compute_score holds its lock when it fails, and Meteor.__del__ waits for that lock:
    # release it and stop the process here so garbage collection cannot hang.
    if meteor.lock.locked():
        meteor.lock.release()
    process = meteor.meteor_p
    try:
        process.stdin.close()
    except OSError:
        pass  # the process is gone; nothing left to flush
    if process.poll() is None:
        process.kill()
    process.wait()


def _meteor():
    from pycocoevalcap.meteor import meteor as meteor_module

    jar = meteor_module.METEOR_JAR
    meteor = _meteor_processes.get(jar)
    if meteor is None or meteor.meteor_p.poll() is not None:
        try:
            meteor = _meteor_processes[jar] = meteor_module.Meteor()
        except OSError as error:
            raise RuntimeError(f"METEOR could not start java ({error}); install java or "
                               "pass use_java=False (METEOR is then reported as None).") from error
    return meteor


def _meteor_score(gts: dict, res: dict) -> float:
    """Corpus METEOR from pycocoevalcap's Meteor (its java process kept for the next score)."""
    # "|||" separates fields in the jar's line protocol; pycocoevalcap strips it from hypotheses only.
    gts = {k: [r.replace("|||", " ") for r in v] for k, v in gts.items()}
    res = {k: [c.replace("|||", " ") for c in v] for k, v in res.items()}
    meteor = _meteor()
    try:
        score, _ = meteor.compute_score(gts, res)
        return float(score)
    except (OSError, ValueError) as error:
        for jar in [jar for jar, kept in _meteor_processes.items() if kept is meteor]:
            del _meteor_processes[jar]  # the next score starts a fresh process
        meteor.meteor_p.kill()
        stderr = meteor.meteor_p.stderr.read().decode(errors="replace").strip()
        _stop_meteor(meteor)
        raise RuntimeError(
            "METEOR (java -jar meteor-1.5.jar, run by pycocoevalcap) failed: "
            f"{type(error).__name__}: {error}. Java said: {stderr[-2000:] or '(nothing)'}. "
            "The jar needs about 2 GB of heap (-Xmx2G); pass use_java=False to skip METEOR."
        ) from error


def caption_metrics(
    references: Mapping[str, list[str]],
    candidates: Mapping[str, str],
    use_java: bool | None = None,
    collapse_repeats: bool = False,
) -> dict:
    """COCO caption metrics of one candidate caption per image against its references.

    Args:
        references: image id -> raw reference captions (at least one per evaluated image). Images
            without a candidate are ignored, as coco-caption does (they do not enter the CIDEr-D
            document frequencies either).
        candidates: image id -> raw generated caption ("" allowed; it scores 0).
        use_java: True: PTB tokenizer + METEOR through java (error if java is missing); False:
            pure-Python tokenisation, METEOR None; None: True when `java` is on PATH, otherwise the
            False path with a one-time warning.
        collapse_repeats: collapse consecutive repeated words in the candidates first, as the M2
            reference evaluation does (see `collapse_repeated_words`).

    Returns:
        dict with bleu_1, bleu_2, bleu_3, bleu_4, meteor (None without java), rouge_l, cider_d
        (floats; fractions, CIDEr-D with 1.0 = 100 in papers) and "tokenizer": "ptb" or "python".

    Raises:
        ValueError: no candidates, a candidate id without references, an empty reference list.
        RuntimeError: java requested but missing, or the PTB tokenizer / METEOR failed.

    Example:
        >>> round(caption_metrics({"1": ["A dog runs.", "A dog is running."]}, {"1": "a dog runs"},
        ...                       use_java=False)["bleu_1"], 6)
        1.0
    """
    global _NO_JAVA_WARNED
    if not candidates:
        raise ValueError("caption_metrics: no candidates to evaluate.")
    for image_id, caption in candidates.items():
        if image_id not in references:
            raise ValueError(f"caption_metrics: candidate image id {image_id!r} has no references.")
        if not references[image_id] or isinstance(references[image_id], str):
            raise ValueError(f"caption_metrics: references[{image_id!r}] must be a non-empty "
                             "list of captions.")
        if not isinstance(caption, str):
            raise TypeError(f"caption_metrics: candidates[{image_id!r}] must be a string, "
                            f"got {type(caption).__name__}.")

    if use_java is None:
        use_java = java_available()
        if not use_java and not _NO_JAVA_WARNED:
            _NO_JAVA_WARNED = True
            logger.warning(
                "java was not found on PATH: METEOR is skipped (reported as None) and the Stanford "
                "PTB tokenizer is replaced by tfcaption's pure-Python tokenisation, so BLEU, ROUGE-L "
                "and CIDEr-D may differ slightly from published (PTB-tokenised) numbers. Install a "
                "Java runtime (e.g. `apt-get install default-jre-headless`) for the official metrics.")
    elif use_java and not java_available():
        raise RuntimeError("caption_metrics(use_java=True): `java` is not on PATH. Install a Java "
                           "runtime (e.g. `apt-get install default-jre-headless`) or pass "
                           "use_java=False (METEOR is then reported as None).")

    ids = list(candidates)
    hyps = {i: candidates[i] for i in ids}
    if collapse_repeats:
        hyps = {i: collapse_repeated_words(c) for i, c in hyps.items()}

    if use_java:
        sent = {("ref", i): list(references[i]) for i in ids}
        sent.update({("cand", i): [hyps[i]] for i in ids})
        tokenized = _ptb_tokenize_java(sent)
        gts = {i: tokenized[("ref", i)] for i in ids}
        res = {i: tokenized[("cand", i)] for i in ids}
    else:
        gts = {i: [ptb_tokenize_python(r) for r in references[i]] for i in ids}
        res = {i: [ptb_tokenize_python(hyps[i])] for i in ids}

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    if any(r.split() for refs in gts.values() for r in refs):
        cider, _ = Cider().compute_score(gts, res)
    else:  # pycocoevalcap's Cider fails on a corpus without any reference n-gram
        cider = 0.0
    meteor = _meteor_score(gts, res) if use_java else None

    return {
        "bleu_1": float(bleu[0]), "bleu_2": float(bleu[1]),
        "bleu_3": float(bleu[2]), "bleu_4": float(bleu[3]),
        "meteor": meteor, "rouge_l": float(rouge), "cider_d": float(cider),
        "tokenizer": "ptb" if use_java else "python",
    }


_TABLE_COLUMNS = (
    ("BLEU-1", "bleu_1"), ("BLEU-2", "bleu_2"), ("BLEU-3", "bleu_3"), ("BLEU-4", "bleu_4"),
    ("METEOR", "meteor"), ("ROUGE-L", "rouge_l"), ("CIDEr-D", "cider_d"),
)
_GROUNDING_COLUMNS = (
    ("Ground-P", "grounding_precision"), ("Ground-R", "grounding_recall"),
    ("Ground-F1", "grounding_f1"),
)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return f"{100.0 * float(value):.1f}"
    return str(value)


def format_metrics_table(rows: Mapping[str, Mapping]) -> str:
    """Render metric dicts as a fixed-width text table, one row per named result.

    Metrics are shown x100 with one decimal (the way captioning papers print them, CIDEr-D included),
    None or a missing metric as "-". Grounding precision/recall/F1 columns appear when any row has
    them (from `tfcaption.datasets.shapes.grounding`).

    Args:
        rows: row label (e.g. "test/model", "test/blind_baseline") -> metrics dict as returned by
            `caption_metrics`, optionally with grounding_* entries.

    Returns:
        The table as a string: header line, rule line, one line per row (no trailing newline).
    """
    columns = list(_TABLE_COLUMNS)
    if any(key in metrics for metrics in rows.values() for _, key in _GROUNDING_COLUMNS):
        columns += list(_GROUNDING_COLUMNS)
    label_width = max([len("split/model")] + [len(str(label)) for label in rows])
    cells = {label: [_cell(metrics.get(key)) for _, key in columns] for label, metrics in rows.items()}
    widths = [max([len(title)] + [len(c[j]) for c in cells.values()])
              for j, (title, _) in enumerate(columns)]
    header = "  ".join([f"{'split/model':<{label_width}}"]
                       + [f"{title:>{w}}" for (title, _), w in zip(columns, widths)])
    lines = [header, "-" * len(header)]
    for label, row in cells.items():
        lines.append("  ".join([f"{str(label):<{label_width}}"]
                               + [f"{c:>{w}}" for c, w in zip(row, widths)]))
    return "\n".join(lines)
