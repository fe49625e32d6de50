from clamp import clamp

for x in range(-20, 21):
    assert clamp(x, -5, 7) == min(max(x, -5), 7), x
assert clamp(3.5, 0, 3) == 3
