from textstats import char_count, word_count

assert word_count("  leading and trailing  ") == 3
assert word_count("tabs\tcount\ttoo") == 3
assert word_count("   ") == 0
assert char_count("ab cd") == 4
assert char_count("") == 0
