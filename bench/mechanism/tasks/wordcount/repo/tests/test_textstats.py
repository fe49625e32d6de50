from textstats import char_count, word_count


def test_words_single_spaces():
    assert word_count("a b c") == 3


def test_words_many_spaces():
    assert word_count("a  b   c") == 3


def test_words_empty():
    assert word_count("") == 0


def test_chars():
    assert char_count("a b c") == 3
