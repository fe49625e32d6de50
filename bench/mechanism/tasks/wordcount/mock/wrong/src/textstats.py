def word_count(text):
    """The number of whitespace-separated words in text."""
    return len(text.split())


def char_count(text):
    """The number of characters in text, spaces excluded."""
    return len(text)
