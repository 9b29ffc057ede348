"""A deterministic financial-sentiment data set in FinLoRA's JSONL format, and its prompt format.

Each row is ``{"context": INSTRUCTION + "\\n" + headline, "target": label}`` with label one of
"negative", "neutral", "positive", as in FinLoRA's ``finlora_sentiment_train.jsonl``, the data of
its ``sentiment_llama_3_1_8b_8bits_r8`` run (FinLoRA docs, "Vanilla LoRA").

Prompt format (the model's text; bytes, see tokenizer.py):

    format_prompt(context) = context + "\\nAnswer:"      format_answer(target) = " " + target

    Sentiment (negative/neutral/positive)?
    Acme Q3 profit rises 8% but misses estimates
    Answer: negative

Label rules (the label is fixed by how a headline is built, never by one keyword):
    movement      metric polarity x direction: revenue/profit/sales/orders/earnings/margins are
                  good, costs/losses/debt/expenses/layoffs are bad; up verbs (rise, climb, jump,
                  grow, widen) times good = positive, times bad = negative; down verbs (fall,
                  drop, slide, decline, ease, narrow) the reverse. "losses narrow" = positive.
    negation      "<metric> fails to <verb>" flips the movement label ("sales fail to grow" =
                  negative, "costs fail to ease" = negative, "debt fails to rise" = positive);
                  "not expected to"/"will not"/"rules out plan to" flip an action
                  ("not expected to cut dividend" = positive); "fails to <good action>" = negative.
    expectations  the comparison decides: beat/top = positive, miss/fall short of/fail to beat =
                  negative, whatever the direction ("profit rises but misses estimates" =
                  negative, "revenue falls but beats forecasts" = positive); "in line with",
                  "matches" = neutral ("sales rise 8%, in line with forecasts" = neutral).
    actions       raise dividend/guidance, cut costs, add jobs, win contract, buy back shares =
                  positive; cut dividend/guidance/jobs, lose contract, close plants, delay
                  launch = negative ("cut" and "raise" appear under both labels).
    steady        "holds steady", "flat", "unchanged", "little changed", "stable" = neutral.
    events        results dates, appointments, meetings, moves = neutral.

JSONL reading and writing live in jsonl.py.

Headlines are at most MAX_HEADLINE_CHARS (60) ASCII characters, so a whole example
(bos + prompt + answer + eos) is at most 118 tokens. Classes are balanced by construction
(row i has label LABELS[i % 3] before shuffling).
"""
from __future__ import annotations

import numpy as np

from minilora.errors import MiniLoraError

NEG, NEU, POS = "negative", "neutral", "positive"
LABELS = (NEG, NEU, POS)
INSTRUCTION = "Sentiment (negative/neutral/positive)?"
MAX_HEADLINE_CHARS = 60

COMPANIES = ("Acme", "Borealis", "Cobalt", "Dynacorp", "Evergreen", "Fulcrum", "Granite", "Helix",
             "Ironwood", "Juniper", "Keystone", "Lumen", "Meridian", "Northwind", "Orion", "Quanta",
             "Redwood", "Solstice", "Titan", "Vertex", "Westlake", "Zenith")
# metric -> (polarity: +1 more is good, -1 more is bad; grammatical plural)
METRICS = {"revenue": (1, False), "profit": (1, False), "sales": (1, True), "orders": (1, True),
           "earnings": (1, True), "margins": (1, True), "costs": (-1, True), "losses": (-1, True),
           "debt": (-1, False), "expenses": (-1, True), "layoffs": (-1, True)}
GOOD_METRICS = tuple(m for m, (p, _) in METRICS.items() if p > 0)
SPREAD_METRICS = ("margins", "losses")            # the only metrics that widen or narrow
# verb (base form) -> direction: +1 up, -1 down
VERBS = {"rise": 1, "climb": 1, "jump": 1, "grow": 1, "widen": 1,
         "fall": -1, "drop": -1, "slide": -1, "decline": -1, "ease": -1, "narrow": -1}
# comparison with expectations (base form) -> label
OUTCOMES = {"beat": POS, "top": POS, "miss": NEG, "fall short of": NEG, "fail to beat": NEG,
            "match": NEU, "in line with": NEU}
EXPECTATIONS = ("estimates", "forecasts")
ACTIONS = {"raise dividend": POS, "cut dividend": NEG, "raise guidance": POS, "cut guidance": NEG,
           "cut costs": POS, "cut jobs": NEG, "add jobs": POS, "win contract": POS,
           "lose contract": NEG, "close plants": NEG, "buy back shares": POS, "delay launch": NEG}
# frame -> whether it flips the action's label
FRAMES = {"to": False, "plans to": False, "expected to": False, "not expected to": True,
          "will not": True, "rules out plan to": True, "fails to": True}
STEADY = ("hold steady", "flat", "unchanged", "little changed", "stable")
PERIODS = ("", "Q1 ", "Q2 ", "Q3 ", "Q4 ", "2024 ", "first-half ")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
EVENTS = ("to report {q} results on {day}", "names new {role}", "sets date for annual meeting",
          "moves headquarters to {city}", "schedules {q} earnings call", "keeps dividend unchanged",
          "reaffirms 2024 guidance", "holds guidance steady", "opens office in {city}")
ROLES = ("CFO", "CEO", "chair", "auditor")
CITIES = ("Austin", "Denver", "Dublin", "Oslo", "Boston", "Lisbon")


def _conj(verb: str, plural: bool) -> str:
    """Present tense of a (possibly multi-word) verb phrase: 'fall short of' -> 'falls short of'."""
    if plural or verb.startswith("in line"):
        return verb
    head, _, rest = verb.partition(" ")
    head += "es" if head.endswith(("s", "sh", "ch", "x")) else "s"
    return f"{head} {rest}".rstrip()


def _movement_label(metric: str, verb: str) -> str:
    if metric not in METRICS:
        raise MiniLoraError(f"unknown metric {metric!r}; expected one of {sorted(METRICS)}")
    if verb not in VERBS:
        raise MiniLoraError(f"unknown verb {verb!r}; expected one of {sorted(VERBS)}")
    if verb in ("widen", "narrow") and metric not in SPREAD_METRICS:
        raise MiniLoraError(f"{metric!r} cannot {verb}; only {SPREAD_METRICS} widen or narrow")
    return POS if METRICS[metric][0] * VERBS[verb] > 0 else NEG


def movement_headline(company, metric, verb, amount="", period=""):
    """'Acme Q3 costs rise 8%' -> (text, label): metric polarity times verb direction."""
    label = _movement_label(metric, verb)
    return f"{company} {period}{metric} {_conj(verb, METRICS[metric][1])}{amount}", label


def failed_movement_headline(company, metric, verb, period=""):
    """'Acme sales fail to grow' -> (text, label): the movement label, flipped."""
    label = POS if _movement_label(metric, verb) == NEG else NEG
    return f"{company} {period}{metric} {_conj('fail', METRICS[metric][1])} to {verb}", label


def expectation_headline(company, metric, outcome, versus="estimates", verb=None, amount="", period=""):
    """'Acme profit rises 8% but misses estimates' -> (text, label): the outcome decides."""
    if metric not in GOOD_METRICS:
        raise MiniLoraError(f"expectation headlines use a good metric {GOOD_METRICS}, got {metric!r}")
    if outcome not in OUTCOMES or versus not in EXPECTATIONS:
        raise MiniLoraError(f"unknown outcome {outcome!r} or comparison {versus!r}")
    plural, label = METRICS[metric][1], OUTCOMES[outcome]
    compare = f"{_conj(outcome, plural)} {versus}"
    if verb is None:
        return f"{company} {period}{metric} {compare}", label
    moved = _movement_label(metric, verb)
    joint = ", " if outcome == "in line with" else " and " if label in (moved, NEU) else " but "
    return f"{company} {period}{metric} {_conj(verb, plural)}{amount}{joint}{compare}", label


def action_headline(company, action, frame="to"):
    """'Acme not expected to cut dividend' -> (text, label): the action's label, flipped by the frame."""
    if action not in ACTIONS or frame not in FRAMES:
        raise MiniLoraError(f"unknown action {action!r} or frame {frame!r}")
    if frame == "fails to" and ACTIONS[action] != POS:
        raise MiniLoraError(f"'fails to' takes a positive action, got {action!r}")
    label = ACTIONS[action]
    if FRAMES[frame]:
        label = POS if label == NEG else NEG
    return f"{company} {frame} {action}", label


def steady_headline(company, metric, form, period=""):
    """'Acme Q3 costs unchanged' -> (text, 'neutral')."""
    if metric not in METRICS or form not in STEADY:
        raise MiniLoraError(f"unknown metric {metric!r} or steady form {form!r}")
    said = _conj(form, METRICS[metric][1]) if form == "hold steady" else form  # the rest are adjectives
    return f"{company} {period}{metric} {said}", NEU


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _amount(rng):
    return "" if rng.random() < 0.4 else f" {int(rng.integers(2, 40))}%"


def _verbs_for(metric):
    """The verbs a metric takes: all of them for margins and losses, else all but widen/narrow."""
    return tuple(v for v in VERBS if metric in SPREAD_METRICS or v not in ("widen", "narrow"))


def _sample_movement(rng):
    metric = _pick(rng, tuple(METRICS))
    return movement_headline(_pick(rng, COMPANIES), metric, _pick(rng, _verbs_for(metric)), _amount(rng),
                             _pick(rng, PERIODS))


def _sample_failed(rng):
    metric = _pick(rng, tuple(METRICS))
    return failed_movement_headline(_pick(rng, COMPANIES), metric, _pick(rng, _verbs_for(metric)),
                                    _pick(rng, PERIODS))


def _sample_expectation(rng):
    metric = _pick(rng, GOOD_METRICS)
    verb = None if rng.random() < 0.35 else _pick(rng, _verbs_for(metric))
    return expectation_headline(_pick(rng, COMPANIES), metric, _pick(rng, tuple(OUTCOMES)),
                                _pick(rng, EXPECTATIONS), verb, _amount(rng) if verb else "",
                                _pick(rng, PERIODS))


def _sample_action(rng):
    frame = _pick(rng, tuple(FRAMES))
    actions = tuple(a for a, lab in ACTIONS.items() if frame != "fails to" or lab == POS)
    return action_headline(_pick(rng, COMPANIES), _pick(rng, actions), frame)


def _sample_steady(rng):
    return steady_headline(_pick(rng, COMPANIES), _pick(rng, tuple(METRICS)), _pick(rng, STEADY),
                           _pick(rng, PERIODS))


def _sample_event(rng):
    event = _pick(rng, EVENTS).format(q=_pick(rng, ("Q1", "Q2", "Q3", "Q4")), day=_pick(rng, DAYS),
                                      role=_pick(rng, ROLES), city=_pick(rng, CITIES))
    return f"{_pick(rng, COMPANIES)} {event}", NEU


# label -> (samplers that can produce it, their weights)
_FAMILIES = {
    POS: ((_sample_movement, _sample_failed, _sample_expectation, _sample_action), (0.35, 0.15, 0.25, 0.25)),
    NEG: ((_sample_movement, _sample_failed, _sample_expectation, _sample_action), (0.35, 0.15, 0.25, 0.25)),
    NEU: ((_sample_expectation, _sample_steady, _sample_event), (0.4, 0.35, 0.25)),
}


def sample_headline(rng, label):
    """One (headline, label) with the given label, drawn from the families that can produce it."""
    samplers, weights = _FAMILIES[label]
    sampler = samplers[int(rng.choice(len(samplers), p=weights))]
    for _ in range(1000):
        text, got = sampler(rng)
        if got == label and len(text) <= MAX_HEADLINE_CHARS:
            return text, got
    raise MiniLoraError(f"could not draw a {label} headline from {sampler.__name__}")  # pragma: no cover


def make_context(headline: str) -> str:
    """The JSONL context of a headline: INSTRUCTION + newline + headline."""
    return f"{INSTRUCTION}\n{headline}"


def format_prompt(context: str) -> str:
    """The model's input text for a row: context + '\\nAnswer:'; the answer follows as ' ' + label."""
    if not isinstance(context, str):
        raise MiniLoraError(f"context must be a str, got {type(context).__name__}")
    return f"{context}\nAnswer:"


def format_answer(target: str) -> str:
    """The text the model learns to produce after the prompt: ' ' + target."""
    if not isinstance(target, str) or not target:
        raise MiniLoraError(f"target must be a non-empty str, got {target!r}")
    return f" {target}"


def generate_sentiment(n_train: int, n_test: int, seed: int):
    """(train_rows, test_rows): lists of {"context", "target"} dicts, no headline in both splits.

    Fully determined by seed (numpy.random.default_rng(seed)). Each split's labels are balanced
    to within one row per class; rows are shuffled.
    """
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise MiniLoraError(f"{name} must be a non-negative int, got {n!r}")
    rng = np.random.default_rng(seed)
    seen, splits = set(), []
    for n in (n_train, n_test):
        rows = []
        for i in range(n):
            for _ in range(10_000):
                text, label = sample_headline(rng, LABELS[i % 3])
                if text not in seen:
                    break
            else:
                raise MiniLoraError(f"ran out of distinct headlines after {len(seen)}; ask for fewer rows")
            seen.add(text)
            rows.append({"context": make_context(text), "target": label})
        splits.append([rows[j] for j in rng.permutation(n)])
    return splits[0], splits[1]


def pretraining_corpus(n: int, seed: int) -> list[str]:
    """n unlabelled texts of the same domain: about 70% headlines of every family, 30% short
    market-report sentences. No instruction, no 'Answer:', no label words, so a model pretrained
    on it knows the domain but not the task."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise MiniLoraError(f"n must be a non-negative int, got {n!r}")
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(n):
        if rng.random() < 0.7:
            texts.append(sample_headline(rng, _pick(rng, LABELS))[0])
            continue
        co, day = _pick(rng, COMPANIES), _pick(rng, DAYS)
        texts.append(_pick(rng, (
            f"Shares of {co} closed at ${int(rng.integers(5, 300))} on {day}.",
            f"{co} shares moved {int(rng.integers(1, 9))}% in {_pick(rng, ('early', 'late'))} trade.",
            f"Trading in {co} was {_pick(rng, ('light', 'heavy', 'busy', 'quiet'))} on {day}.",
            f"{co} reports results after the close on {day}.",
            f"Analysts cover {co} and {_pick(rng, COMPANIES)} this week.",
        )))
    return texts
