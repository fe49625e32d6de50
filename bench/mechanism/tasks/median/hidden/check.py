import statistics

from stats import median

for xs in ([1], [1, 2], [5, 3, 1, 4], [2, 2, 2, 9], list(range(11)), [0.5, 1.5]):
    assert median(xs) == statistics.median(xs), xs
