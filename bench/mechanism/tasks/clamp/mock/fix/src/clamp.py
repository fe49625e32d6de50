def clamp(x, lo, hi):
    """x limited to the closed interval [lo, hi]."""
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x
