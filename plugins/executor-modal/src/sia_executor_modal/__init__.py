"""sia-executor-modal: sia's training worker as a Modal function on an on-demand GPU.

Importing this package imports neither modal nor torch; see :mod:`sia_executor_modal.executor`.
"""
