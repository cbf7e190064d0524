"""Deterministic code only: the VerifiedPipeline workflow and its helpers.

Installed as `raftline.workflows`.
"""

if __name__ == "workflows":  # the pre-0.2 name, from a source checkout: alias the one copy
    from raftline._compat import alias

    alias(__name__)
