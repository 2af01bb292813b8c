"""Placeholder scorer: importing it fails with one line saying which GPQA file to provide."""

from sia_task_gpqa.data import GPQADataUnavailable, unavailable_reason

raise GPQADataUnavailable(
    unavailable_reason()
    or "this is the placeholder gpqa folder; run `sia --task gpqa` to use the built task"
)
