import re


def slugify(text):
    """A URL slug: lower-case words joined by '-'."""
    words = re.findall(r"[A-Za-z0-9]+", text)
    return "-".join(words)
