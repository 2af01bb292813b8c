"""PPO + GAE objective plugin for sia (entry point ``rl-ppo``)."""
