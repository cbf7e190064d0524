"""Example pipelines (YAML); installed as `raftline.examples` (the YAML files only)."""
