"""Published checkpoints: transformers' checkpoint folders in and out of compiled specs.

In: a local checkpoint folder (config.json and safetensors weights) and a mapping file that
says, as data, how that family's config fields become the spec's params and its tensors the
model's (:mod:`~.mapping`, :mod:`~.patterns`, :mod:`~.transforms`). Out: the compiled module
with the weights (:mod:`~.load`), or, the other way, a checkpoint folder that transformers
loads (:mod:`~.export`). :mod:`~.files` reads and checks the files (never a pickle),
:mod:`~.plan` matches keys and shapes before any tensor moves, :mod:`~.library` finds the
mappings shipped beside the specs. Above the torch backend, below the API.
"""
