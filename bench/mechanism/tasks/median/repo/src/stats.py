def median(xs):
    """The median of a non-empty list of numbers."""
    ordered = sorted(xs)
    return ordered[len(ordered) // 2]
