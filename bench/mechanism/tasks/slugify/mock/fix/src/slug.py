import re


def slugify(text):
    """A URL slug: lower-case words joined by '-'."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "-".join(words)
