from slug import slugify

assert slugify("ABC def") == "abc-def"
assert slugify("  Many   SPACES ") == "many-spaces"
assert slugify("x") == "x"
