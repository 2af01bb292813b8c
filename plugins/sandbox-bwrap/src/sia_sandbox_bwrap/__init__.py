"""bubblewrap sandbox plugin for sia (entry point ``sandbox-bwrap``)."""
