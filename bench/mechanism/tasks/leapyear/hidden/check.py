import calendar

from calendar_rules import is_leap

for year in range(1583, 2500):
    assert is_leap(year) == calendar.isleap(year), year
