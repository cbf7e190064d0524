"""Everything with I/O that Temporal schedules: built-in steps, judges, providers.

Installed as `raftline.activities`.
"""

if __name__ == "activities":  # the pre-0.2 name, from a source checkout: alias the one copy
    from raftline._compat import alias

    alias(__name__)
