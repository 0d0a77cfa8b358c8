"""Block definitions shared by the tests of repeated blocks (cloning and block classes)."""

# ff: two inputs, two outputs, a repeat inside, a tie inside, an init on a node inside.
FF_BLOCKS = """
blocks:
  ff:
    label: "FF"
    params: {d: 8}
    inputs: [x, skip]
    nodes:
      - {id: a, op: linear, out_features: "${d}", init: {weight: {normal: {std: 0.5}}}}
      - {id: inner, op: sub, repeat: 2}
      - {id: b, op: linear, out_features: 8, tie: {weight: a.weight}}
      - {id: s, op: add, in: [b, skip]}
    outputs: {y: s, mid: inner}
  sub:
    inputs: [x]
    nodes:
      - {id: n, op: layer_norm}
      - {id: r, op: relu}
    outputs: r
"""
