"""Pure verification logic, no Temporal: taxonomy, L1 rules, judge prompts, routing.

Installed as `raftline.verifiers`.
"""

if __name__ == "verifiers":  # the pre-0.2 name, from a source checkout: alias the one copy
    from raftline._compat import alias

    alias(__name__)
