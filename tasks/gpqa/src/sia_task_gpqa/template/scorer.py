"""gpqa scorer: the answer's letter against the private label (rules: sia_task_gpqa.scoring).

``aggregate`` adds accuracy per domain and the parse-failure rate; it reads each item's domain
from this folder's public split files.
"""

from pathlib import Path

from sia_task_gpqa.scoring import make_scorer

score_item, aggregate = make_scorer(Path(__file__).resolve().parent)
