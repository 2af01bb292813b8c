"""Example third-party RL objective for sia: ``reinforce-kl`` (entry point ``rl-example``)."""
