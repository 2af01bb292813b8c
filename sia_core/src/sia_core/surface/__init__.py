"""Layer 5, surface: what users and plugins see first. May import every layer below.

``cli/`` (the ``sia`` command, its options made from ``RunConfig``) and ``builtin/`` (the
built-in plugins: the scripted backend, the process sandbox, the tiny-add task, the progress
display).
"""
