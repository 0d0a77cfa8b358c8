"""torch.nn modules that ops lower to where torch has none (imported lazily, only by lowerings).

In: tensors. Out: tensors. Generated code and artifacts call these by module path
(``archcomp.nn.attention.MultiHeadAttention``); nothing here imports the rest of archcomp.
"""
