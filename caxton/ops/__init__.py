"""Runtime operations: backup and restore, safe mode, storage verification.

Each module keeps its decisions in pure functions over frozen values and its file work in
small blocking functions (run through ``trio.to_thread`` by the server, directly by the CLI).
"""
