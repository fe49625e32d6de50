def clamp(x, lo, hi):
    """x limited to the closed interval [lo, hi]."""
    if x < lo:
        return lo
    return x
