"""A worse scaffold: always answers 0."""


def solve(item, ctx):
    return 0
