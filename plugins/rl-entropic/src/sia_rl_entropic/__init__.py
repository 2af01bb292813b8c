"""Entropic advantage weighting objective plugin for sia (entry point ``rl-entropic``)."""
