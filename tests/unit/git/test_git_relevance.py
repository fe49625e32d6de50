"""BM25 ranking of commits against a prompt."""

from __future__ import annotations

import math

from loops.git import relevance


def test_tokenize_splits_paths_identifiers_and_drops_stopwords() -> None:
    assert relevance.tokenize("Fix the gitRepo in src/loops/git_repo.py") == [
        "fix",
        "git",
        "repo",
        "src",
        "loop",
        "git",
        "repo",
        "py",
    ]
    assert relevance.tokenize("a I of -- !!") == []


def test_stem_joins_word_forms_and_keeps_short_words() -> None:
    assert {relevance.stem(w) for w in ("eviction", "evicted", "evicts", "evict")} == {"evict"}
    assert relevance.stem("class") == "class" and relevance.stem("bugs") == "bugs"


def test_relevant_documents_rank_first_and_unrelated_ones_are_left_out() -> None:
    docs = [
        "feat: login form\nsrc/ui/login.tsx",
        "fix: parser handles empty headers\nsrc/parser.py tests/test_parser.py",
        "chore: bump deps\npyproject.toml",
        "feat: parser streaming bodies\nsrc/parser.py",
    ]
    ranked = relevance.rank("make the parser accept empty headers", docs)
    assert [i for i, _ in ranked] == [1, 3]
    assert ranked[0][1] > ranked[1][1] > 0


def test_rare_terms_weigh_more_than_common_ones() -> None:
    docs = ["parser one", "parser two", "parser three", "tokenizer parser"]
    ranked = relevance.rank("tokenizer parser", docs)
    assert ranked[0][0] == 3


def test_longer_documents_are_normalised() -> None:
    short = "cache eviction"
    long = "cache " + " ".join(f"word{i}" for i in range(40))
    ranked = relevance.rank("cache", [long, short])
    assert [i for i, _ in ranked] == [1, 0]


def test_scores_match_the_bm25_formula() -> None:
    docs = ["alpha beta", "beta gamma gamma"]
    (index, score), *_ = relevance.rank("gamma", docs, k1=1.2, b=0.75)
    n, df, tf, length, avg = 2, 1, 2, 3, 2.5
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    expected = idf * tf * 2.2 / (tf + 1.2 * (1 - 0.75 + 0.75 * length / avg))
    assert index == 1 and math.isclose(score, expected)


def test_ties_keep_the_documents_order_and_empty_input_ranks_nothing() -> None:
    assert [i for i, _ in relevance.rank("same", ["same", "same"])] == [0, 1]
    assert relevance.rank("", ["x"]) == []
    assert relevance.rank("x", []) == []
