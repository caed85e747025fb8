"""Manifests (pure): YAML files → located documents → typed models → one checked catalog.

`load` reads and parses safely, `check` turns one document into a model or findings,
`catalog` applies the whole-repository rules, `validate` is the pipeline, `problems` the
located findings, `crds` the schemas generated from `model`. No I/O but reading a tree.
"""
