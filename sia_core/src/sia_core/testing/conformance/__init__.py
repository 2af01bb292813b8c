"""Conformance test suites every plugin of a kind reuses (subclass the class, supply a factory)."""
