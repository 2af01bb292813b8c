"""Layer 1, contracts: what plugins implement and exchange. Imports nothing else of sia.

``hookspecs`` (the hooks), ``records`` (frozen records crossing plugin boundaries), ``events``
(the event catalogue), ``config`` (every run setting, with its flag), ``errors``, ``backend``
(backends and the ``TaskModel`` base with its declared abilities), ``sandbox`` (the sandbox
interface), ``training`` (the executor interface and default training settings).
"""
