"""GRPO objective plugin for sia (entry point ``rl-grpo``)."""
