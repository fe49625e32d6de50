def word_count(text):
    """The number of whitespace-separated words in text."""
    return len(text.split(" ")) if text else 0


def char_count(text):
    """The number of characters in text, spaces excluded."""
    return len(text.replace(" ", ""))
