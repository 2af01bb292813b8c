"""sia task package: LawBench, 191-class Chinese criminal-charge classification (CAIL2018).

The task directory is ``task/`` inside this package; sia finds it through the ``sia_tasks``
hook in :mod:`sia_task_lawbench.plugin`.
"""

__version__ = "0.1.0"
