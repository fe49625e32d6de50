"""Okapi BM25 ranking of short documents (commit messages and their paths) against a prompt.

Small on purpose: the corpus is one repository's recent history (hundreds to a few
thousand commits), built fresh for each prompt, so an inverted index would not pay.
Scoring is the classic BM25 with Lucene's non-negative idf,
``idf(t) = ln(1 + (N - n_t + 0.5) / (n_t + 0.5))``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

#: words too common in prompts and commit messages to tell commits apart
_STOPWORDS_TEXT = """a an and are as at be but by do does for from has have how i if in into is
it its make made of on or our so that the their then there these this to was we were what when
where which will with you your"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())

_WORD = re.compile(r"[A-Za-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


#: suffixes stripped by :func:`stem`, longest first
_SUFFIXES = ("ations", "ation", "ions", "ion", "ings", "ing", "ed", "s")


def stem(word: str) -> str:
    """A light suffix-stripping stem, so ``eviction``, ``evicted`` and ``evicts`` meet.

    Deliberately small (no Porter rules): a suffix goes only when at least four
    letters stay, and a double ``ss`` is kept (``class``, ``pass``).
    """
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            if suffix == "s" and word.endswith("ss"):
                return word
            return word[: -len(suffix)]
    return word


def tokenize(text: str) -> list[str]:
    """Lower-cased, stemmed words of ``text``; paths and identifiers split into parts.

    ``src/loops/gitRepo.py`` gives ``src``, ``loop``, ``git``, ``repo``, ``py``;
    ``snake_case`` gives ``snake``, ``case``. Stopwords and 1-letter words are dropped.
    """
    tokens: list[str] = []
    for word in _WORD.findall(text):
        for part in _CAMEL.split(word):
            low = part.lower()
            if len(low) > 1 and low not in STOPWORDS:
                tokens.append(stem(low))
    return tokens


def rank(
    query: str,
    documents: Sequence[str],
    *,
    k1: float = 1.5,
    b: float = 0.75,
) -> list[tuple[int, float]]:
    """Rank ``documents`` by BM25 relevance to ``query``.

    Args:
        query: the text to match (e.g. the next prompt).
        documents: the texts to rank (e.g. one per commit).
        k1: term-frequency saturation.
        b: length normalisation (0 none, 1 full).

    Returns:
        ``(index, score)`` for every document sharing at least one term with the
        query, best first; equal scores keep the documents' order.
    """
    terms = set(tokenize(query))
    if not terms or not documents:
        return []
    bags = [Counter(tokenize(doc)) for doc in documents]
    lengths = [sum(bag.values()) for bag in bags]
    avg_len = (sum(lengths) / len(lengths)) or 1.0
    n_docs = len(bags)
    idf = {
        term: math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
        for term in terms
        if (df := sum(1 for bag in bags if term in bag))
    }
    scored: list[tuple[int, float]] = []
    for index, (bag, length) in enumerate(zip(bags, lengths, strict=True)):
        score = 0.0
        for term, weight in idf.items():
            tf = bag.get(term, 0)
            if tf:
                score += weight * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg_len))
        if score > 0:
            scored.append((index, score))
    scored.sort(key=lambda pair: (-pair[1], pair[0]))
    return scored
