"""longcot-chess scorer: LongCoT's answer parsing, with an engine-tolerant best_3_moves.

The rules live in ``sia_task_longcot_chess.scoring`` (importable, so tests and benchmarks use
the same code); this file is what ``task.toml`` names.
"""

from sia_task_longcot_chess.scoring import aggregate, score_item

__all__ = ["aggregate", "score_item"]
