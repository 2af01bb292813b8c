"""sia task package: LongCoT chess (``best_3_moves`` and ``knight_path``), as SIA bundles it.

``knight`` solves and generates knight_path items exactly; ``scoring`` holds the scorer the task
directory (``task/``) uses; ``plugin`` registers the task with sia.
"""
