"""sia-backend-openhands: the Meta/Feedback roles of sia run as an OpenHands agent.

Nothing heavy is imported here; ``openhands`` is imported when a role runs.
"""

__version__ = "0.1.0"
