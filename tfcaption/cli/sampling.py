"""The decoding flags `tfcaption-caption` and `tfcaption-evaluate` share: `--sampler --temperature --top-k
--top-p --seed`, turned into a `tfcaption.samplers.Sampler`, and `--max-steps` (bad values are ValueErrors:
one line, exit 2)."""

SAMPLER_FLAGS = ("sampler", "temperature", "top_k", "top_p", "seed")


def add_sampler_arguments(parser):
    """Adds the sampler flags (values are checked by `sampler_from_args`, so a bad one is one line)."""
    group = parser.add_argument_group("decoding", "how captions are decoded (default: the run's beam size)")
    group.add_argument("--sampler", metavar="NAME",
                       help="greedy, beam (M2's beam search, with --beam-size, default 3), generate_beam "
                            "(transformers' generate() beam search, with --beam-size), random, top_k or top_p; "
                            "default: top_p with --top-p, top_k with --top-k, random with --temperature or --seed "
                            "alone, else --beam-size beams of the run's decode.beam_search")
    group.add_argument("--temperature", metavar="T",
                       help="divide the logits by T > 0 (random samplers; beams rank by it)")
    group.add_argument("--top-k", metavar="K",
                       help="sample among the K most probable words (top_k; a cutoff for top_p)")
    group.add_argument("--top-p", metavar="P", help="sample from the nucleus of probability P in (0, 1] (top_p)")
    group.add_argument("--seed", metavar="N", help="seed of the random samplers: the same seed, the same captions")
    group.add_argument("--max-steps", metavar="T",
                       help="tokens generated per caption at most, <eos> included (generate's max_length): a caption "
                            "without <eos> by then is cut after T words; after a --prompt, the tokens after it "
                            "(transformers' max_new_tokens) (default: the run's or export's)")
    return parser


def max_steps_from_args(args):
    """`--max-steps` as an int >= 1, or None when not given (the run's or export's length)."""
    text = getattr(args, "max_steps", None)
    return None if text is None else _number("max-steps", text, int, lambda v: v >= 1, "an integer >= 1")


def _number(flag, text, kind, check, expected):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise ValueError(f"--{flag} must be {expected}, got {text!r}.") from None
    if not check(value):
        raise ValueError(f"--{flag} must be {expected}, got {text!r}.")
    return value


def sampler_from_args(args, beam_size=None):
    """The `Sampler` the flags ask for, or None when no sampler flag was given (the caller's beam size then
    decides, with the run's `decode.beam_search`). `beam_size` is `--beam-size` (used by `--sampler beam` and
    `--sampler generate_beam`, refused with any other sampler)."""
    from tfcaption import samplers

    given = {flag: getattr(args, flag, None) for flag in SAMPLER_FLAGS}
    if all(value is None for value in given.values()):
        return None
    name = given["sampler"]
    if name is None:
        name = ("top_p" if given["top_p"] is not None else "top_k" if given["top_k"] is not None else "random")
    name = name.strip().lower().replace("-", "_")
    if name not in samplers.NAMES:
        raise ValueError(f"--sampler must be one of {', '.join(samplers.NAMES)}, got {given['sampler']!r}.")
    options = {}
    if given["temperature"] is not None:
        options["temperature"] = _number("temperature", given["temperature"], float, lambda v: v > 0,
                                         "a number > 0")
    if given["seed"] is not None:
        if name in ("greedy", "beam", "generate_beam"):
            raise ValueError(f"--seed applies to the random samplers (random, top_k, top_p), not --sampler {name}.")
        options["seed"] = _number("seed", given["seed"], int, lambda v: True, "an integer")
    if given["top_k"] is not None:
        if name not in ("top_k", "top_p"):
            raise ValueError(f"--top-k applies to --sampler top_k (or top_p, as a cutoff), not {name}.")
        options["k"] = _number("top-k", given["top_k"], int, lambda v: v >= 1, "an integer >= 1")
    if given["top_p"] is not None:
        if name != "top_p":
            raise ValueError(f"--top-p applies to --sampler top_p, not {name}.")
        options["p"] = _number("top-p", given["top_p"], float, lambda v: 0 < v <= 1, "a number in (0, 1]")
    if beam_size is not None:
        if name not in ("beam", "generate_beam"):
            raise ValueError(f"--beam-size applies to --sampler beam, not {name}.")
        options["num_beams"] = _number("beam-size", beam_size, int, lambda v: v >= 1, "an integer >= 1")
    return samplers.get(name, **options)
