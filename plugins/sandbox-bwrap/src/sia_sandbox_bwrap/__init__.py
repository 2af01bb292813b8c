"""bubblewrap sandbox plugin for sia (entry point ``sandbox-bwrap``)."""

#: what the sandbox isolates, as ``sia plugins`` and the run header say (here, so the entry
#: point module does not import the sandbox itself)
ISOLATION = (
    "bubblewrap namespaces: only the interpreter, public data (read-only) and its work dir"
    " visible; no network but the gateway; no capabilities; rlimits + pids cgroup; tree killed"
)
