from duration import parse_duration

assert parse_duration("1m") == 60
assert parse_duration("1h1m1s") == 3661
assert parse_duration("90m") == 5400
