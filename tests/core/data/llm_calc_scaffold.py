"""Asks the task model, then adds the numbers the reply names (the scripted model answers them)."""

import re


def solve(item, ctx):
    reply = ctx.llm([{"role": "user", "content": item["input"]}], max_tokens=16)
    nums = [int(x) for x in re.findall(r"\d+", reply)]
    return sum(nums[:2]) if len(nums) >= 2 else None
