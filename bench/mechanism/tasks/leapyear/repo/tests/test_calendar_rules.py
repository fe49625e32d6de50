from calendar_rules import is_leap


def test_ordinary():
    assert is_leap(2024) and not is_leap(2023)


def test_century():
    assert not is_leap(1900)


def test_four_centuries():
    assert is_leap(2000)
