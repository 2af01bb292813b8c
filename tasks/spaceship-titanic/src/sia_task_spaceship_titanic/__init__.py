"""sia task package: Spaceship Titanic (Kaggle, MLE-bench split), binary classification.

The task directory is ``task/`` inside this package; sia finds it through the ``sia_tasks``
hook in :mod:`sia_task_spaceship_titanic.plugin`.
"""

__version__ = "0.1.0"
