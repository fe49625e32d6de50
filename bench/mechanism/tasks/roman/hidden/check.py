from roman import to_roman

assert to_roman(9) == "IX"
assert to_roman(40) == "XL"
assert to_roman(3999) == "MMMCMXCIX"
assert to_roman(2024) == "MMXXIV"
