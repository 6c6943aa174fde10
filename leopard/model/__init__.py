"""The model: names and their grammar, set configuration, version tokens and closures.

Pure computation, no I/O: everything else builds on it.
"""
