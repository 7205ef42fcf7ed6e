"""Subject-verb agreement (paper A's task, issue 8): a seeded sentence generator and its splits.

A sentence is "the [adj] SUBJECT [PREP the [adj] DISTRACTOR] VERB ." (4 to 9 tokens), padded
to T = 9 with <pad> at the end. The label says whether the verb agrees in number with its
subject: "the keys near the cabinet is ." is 0 (keys, plural; is, singular), "the key near the
cabinets is ." is 1. The distractor is the noun of the prepositional phrase, between subject
and verb; a sentence is *hard* when the distractor's number differs from the subject's (the
nearest noun then suggests the wrong verb form).

Composition of every split (exact counts, sizes divisible by 8): half hard; the easy half is
half without a prepositional phrase and half with a distractor of the subject's number; in
each of these three kinds half the sentences agree (label 1), and the subject's number is
singular or plural with equal probability. Adjectives (before the subject, before the
distractor) come with probability 1/2 each, so the subject sits at position 1 or 2 and the
verb anywhere from position 2 to 7: the models cannot read the answer from fixed positions.

Splits: train, validation, test, drawn from one default_rng(seed) stream, cell by cell
(train first), every sentence distinct across all three (a sentence is drawn again when it
was already drawn): the splits are disjoint and depend only on (seed, sizes). The test split
is for reporting only; choices (epochs, seeds) use validation. Uniqueness thins the short
sentences: there are only 576 four-token sentences per label, so later splits hold fewer of
them (test: 86 of length 4, 164 of length 5, 196 / 366 / 188 of lengths 7 / 8 / 9).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = ["T", "PAD", "NOUNS", "VERBS", "PREPOSITIONS", "ADJECTIVES", "VOCAB", "TOKEN_ID",
           "SIZES", "SEED", "SvaSplit", "sva_splits", "encode", "decode", "label_sentence",
           "KINDS"]

T = 9                               # tokens per sentence, padded
PAD = "<pad>"

# (singular, plural)
NOUNS = (("key", "keys"), ("cabinet", "cabinets"), ("dog", "dogs"), ("cat", "cats"),
         ("author", "authors"), ("teacher", "teachers"), ("doctor", "doctors"),
         ("painting", "paintings"), ("car", "cars"), ("house", "houses"), ("bird", "birds"),
         ("student", "students"), ("table", "tables"), ("box", "boxes"),
         ("friend", "friends"), ("lawyer", "lawyers"), ("window", "windows"),
         ("farmer", "farmers"), ("book", "books"), ("picture", "pictures"),
         ("pilot", "pilots"), ("girl", "girls"), ("boy", "boys"), ("tree", "trees"))
VERBS = (("is", "are"), ("was", "were"), ("has", "have"), ("runs", "run"),
         ("sleeps", "sleep"), ("falls", "fall"), ("waits", "wait"), ("shines", "shine"),
         ("breaks", "break"), ("moves", "move"), ("stays", "stay"), ("looks", "look"))
PREPOSITIONS = ("near", "behind", "beside", "under", "above", "with", "by", "of", "from", "on")
ADJECTIVES = ("old", "red", "small", "big", "new", "green", "tall", "quiet")

VOCAB = ((PAD, "the", ".")
         + tuple(n[0] for n in NOUNS) + tuple(n[1] for n in NOUNS)
         + tuple(v[0] for v in VERBS) + tuple(v[1] for v in VERBS)
         + PREPOSITIONS + ADJECTIVES)
TOKEN_ID = {word: i for i, word in enumerate(VOCAB)}
_NOUN_NUMBER = {form: number for pair in NOUNS for number, form in enumerate(pair)}
_VERB_NUMBER = {form: number for pair in VERBS for number, form in enumerate(pair)}

SEED = 0
SIZES = {"train": 4000, "validation": 1000, "test": 1000}

# The kinds of sentence: distractor 0 none (easy), 1 same number (easy), 2 differs (hard),
# with their share of a split.
KINDS = {0: 0.25, 1: 0.25, 2: 0.5}


@dataclass(frozen=True)
class SvaSplit:
    """One split: tokens (N, T) int64 ids (<pad> = 0 at the end), lengths (N,), label (N,)
    int64 (1: the verb agrees with its subject), hard (N,) bool, distractor (N,) int64 (0 none,
    1 same number, 2 different number), subject_plural (N,) bool, verb_plural (N,) bool."""

    name: str
    tokens: np.ndarray
    lengths: np.ndarray
    label: np.ndarray
    hard: np.ndarray
    distractor: np.ndarray
    subject_plural: np.ndarray
    verb_plural: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def sentences(self) -> list[str]:
        return [decode(row) for row in self.tokens]

    def subset(self, limit: int | None) -> "SvaSplit":
        """The first `limit` sentences (all when None). The order is shuffled once at
        generation, so a prefix keeps the kinds and labels mixed."""
        if limit is None:
            return self
        index = slice(0, int(limit))
        return SvaSplit(self.name, *(getattr(self, f)[index] for f in
                                     ("tokens", "lengths", "label", "hard", "distractor",
                                      "subject_plural", "verb_plural")))


def encode(words: list[str] | str) -> np.ndarray:
    """Token ids (T,) of a sentence (a string split on spaces, or a word list), padded."""
    if isinstance(words, str):
        words = words.split()
    if len(words) > T:
        raise ValueError(f"a sentence has at most {T} tokens, not {len(words)}")
    ids = np.zeros(T, np.int64)
    ids[:len(words)] = [TOKEN_ID[w] for w in words]
    return ids


def decode(ids) -> str:
    """The sentence of token ids, without padding."""
    return " ".join(VOCAB[int(i)] for i in ids if int(i) != 0)


def label_sentence(sentence: str) -> tuple[int, bool]:
    """(label, hard) by reading the sentence: the subject is the first noun, the verb the word
    before the final "."; the distractor, if any, the other noun. Independent of the
    generator (the tests check one against the other)."""
    words = sentence.split()
    if words[-1] != "." or words[0] != "the":
        raise ValueError(f"not a sentence of this task: {sentence!r}")
    nouns = [_NOUN_NUMBER[w] for w in words if w in _NOUN_NUMBER]
    verb = _VERB_NUMBER[words[-2]]
    label = int(nouns[0] == verb)
    hard = len(nouns) > 1 and nouns[1] != nouns[0]
    return label, hard


def _draw(rng: np.random.Generator, kind: int, agrees: int) -> tuple[tuple[str, ...], bool,
                                                                        bool]:
    subject_plural = bool(rng.integers(2))
    words = ["the"]
    if rng.integers(2):
        words.append(ADJECTIVES[rng.integers(len(ADJECTIVES))])
    words.append(NOUNS[rng.integers(len(NOUNS))][subject_plural])
    if kind:
        distractor_plural = subject_plural if kind == 1 else not subject_plural
        words += [PREPOSITIONS[rng.integers(len(PREPOSITIONS))], "the"]
        if rng.integers(2):
            words.append(ADJECTIVES[rng.integers(len(ADJECTIVES))])
        words.append(NOUNS[rng.integers(len(NOUNS))][distractor_plural])
    verb_plural = subject_plural if agrees else not subject_plural
    words += [VERBS[rng.integers(len(VERBS))][verb_plural], "."]
    return tuple(words), subject_plural, verb_plural


def _cells(size: int) -> list[tuple[int, int, int]]:
    """(kind, label, count) of a split of `size` sentences."""
    if size % 8:
        raise ValueError(f"split sizes must be multiples of 8, not {size}")
    return [(kind, label, int(size * share) // 2) for kind, share in KINDS.items()
            for label in (0, 1)]


@functools.lru_cache(maxsize=8)
def _splits(seed: int, sizes: tuple[tuple[str, int], ...]) -> dict[str, SvaSplit]:
    rng = np.random.default_rng(seed)
    seen: set[tuple[str, ...]] = set()
    splits = {}
    for name, size in sizes:
        rows = []
        for kind, label, count in _cells(size):
            drawn = 0
            while drawn < count:
                words, subject_plural, verb_plural = _draw(rng, kind, label)
                if words in seen:
                    continue
                seen.add(words)
                rows.append((words, label, kind, subject_plural, verb_plural))
                drawn += 1
        order = rng.permutation(len(rows))
        rows = [rows[i] for i in order]
        arrays = [np.stack([encode(list(r[0])) for r in rows]),
                  np.array([len(r[0]) for r in rows], np.int64),
                  np.array([r[1] for r in rows], np.int64),
                  np.array([r[2] == 2 for r in rows], bool),
                  np.array([r[2] for r in rows], np.int64),
                  np.array([r[3] for r in rows], bool),
                  np.array([r[4] for r in rows], bool)]
        for array in arrays:
            array.setflags(write=False)
        splits[name] = SvaSplit(name, *arrays)
    return splits


def sva_splits(seed: int = SEED, sizes: dict[str, int] | None = None) -> dict[str, SvaSplit]:
    """{"train", "validation", "test"} -> SvaSplit, deterministic in (seed, sizes) (default
    SIZES: 4000 / 1000 / 1000). Cached; the arrays are read-only."""
    sizes = dict(SIZES if sizes is None else sizes)
    return _splits(int(seed), tuple(sizes.items()))
