from slug import slugify


def test_plain():
    assert slugify("hello world") == "hello-world"


def test_capitals():
    assert slugify("Hello World") == "hello-world"


def test_punctuation():
    assert slugify("Loops, Gates & Judges!") == "loops-gates-judges"
