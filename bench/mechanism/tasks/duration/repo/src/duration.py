import re

UNITS = {"h": 3600, "s": 1}


def parse_duration(text):
    """Seconds in a duration such as '1h30m', '45s' or '2h'."""
    total = 0
    for amount, unit in re.findall(r"(\d+)([hms])", text):
        total += int(amount) * UNITS.get(unit, 0)
    return total
