"""One module path of an exported graph as an archcomp body, its children one level down.

The calls that ran in a module are grouped by the child they ran in: a child the recogniser
knows is one op node, any other child a block of its own (named after its class, equal bodies
shared), and the module's own calls op nodes. ``P.0``, ``P.1``, ... in a row, each on the one
before with the same op, become one node with ``repeat``. Context (masks, positions, RoPE
tables) emits nothing: only a recognised op may read it.
"""

from __future__ import annotations

import json
import operator
import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from archcomp.frontend.schema import reserved_id
from archcomp.importer import pooling
from archcomp.importer.alternating import merge_alternating
from archcomp.importer.calls import Ref, Unsupported, call_op
from archcomp.importer.channels import TO_FIRST, TO_LAST, channels_first
from archcomp.importer.dispatch import recognise_any
from archcomp.importer.exported import CASTS, Flat
from archcomp.importer.mamba import mamba_mixer
from archcomp.importer.nested import merge_nested
from archcomp.importer.ordered import ordered_block, run_length
from archcomp.importer.parameters import expand_to_batch, own_tensor
from archcomp.importer.recognise_decoders import fold_positions, own_call, position_table
from archcomp.importer.recognise_encdec import absorbed_add
from archcomp.importer.shared import lifted_ties, own_owners, shared_ties, uncalled_owners
from archcomp.importer.swin import batch_free, fold_patch_merging
from archcomp.importer.t5 import Refused, check_buckets, is_stack, stack_block, stray_calls
from archcomp.importer.trace import _snake, without_defaults
from archcomp.importer.unify import unify, unify_ops
from archcomp.importer.unread import read_tensors, unread_tensors

ATEN: dict[str, Any] = {
    "aten.add.Tensor": operator.add,
    "aten.sub.Tensor": operator.sub,
    "aten.mul.Tensor": operator.mul,
    "aten.div.Tensor": operator.truediv,
    "aten.silu.default": F.silu,
    "aten.relu.default": F.relu,
    "aten.gelu.default": F.gelu,
    "aten.tanh.default": torch.tanh,
    "aten.sigmoid.default": torch.sigmoid,
    "aten.exp.default": torch.exp,
    "aten.rsqrt.default": torch.rsqrt,
    "aten.sqrt.default": torch.sqrt,
    "aten.neg.default": torch.neg,
    "aten.log.default": torch.log,
    "aten.abs.default": torch.abs,
    "aten.transpose.int": torch.transpose,
    "aten.permute.default": torch.permute,
    "aten.view.default": torch.reshape,
    "aten.reshape.default": torch.reshape,
    "aten.cat.default": torch.cat,
    "aten.softmax.int": F.softmax,
    "aten.add_.Tensor": operator.add,  # in place (``h += residual``): read after it, refused
    "aten.mul_.Tensor": operator.mul,
    "aten.flatten.using_ints": torch.flatten,
    "aten.mean.dim": torch.mean,
    "aten.select.int": torch.select,
    "aten.max_pool2d.default": F.max_pool2d,
    "aten.adaptive_avg_pool2d.default": F.adaptive_avg_pool2d,
    "aten.pow.Tensor_Scalar": torch.pow,  # CLIP's L2 norm
    "aten.sum.dim_IntList": torch.sum,
    "aten.matmul.default": torch.matmul,  # CLIP's logits
    "aten.t.default": torch.t,
    "aten.argmax.default": torch.argmax,  # CLIP's EOS position
    "aten.eq.Scalar": operator.eq,
    "aten.roll.default": torch.roll,  # Swin's cyclic shift
    "aten.pad.default": F.pad,  # Swin's padding to whole windows (a zero pad passes)
    "aten.slice.Tensor": "slice",  # x[:, 0::2]: an index (Swin's patch merging)
}
_CHUNK = "aten.chunk.default"
_NUMBERED = re.compile(r"^([A-Za-z_]\w*)\.(\d+)$")
Body = dict[str, Any]


@dataclass
class Item:
    """One node of a body before names are final: what it reads and which values it gives."""

    id: str
    op: str
    ins: list[fx.Node] | dict[str, fx.Node]
    opts: dict[str, Any]
    outs: list[fx.Node]
    calls: set[fx.Node]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Walker:
    """Walks an exported graph's module paths; collects blocks and every problem."""

    flat: Flat
    dims: tuple[tuple[int, str], ...] = ()  # leading sizes of the traced input, by name
    sizes: dict[int, str] = field(default_factory=dict)  # a size -> the param it is
    blocks: dict[str, Body] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    tensors: set[fx.Node] = field(default_factory=set)  # bare parameters given a node already
    problems: list[str] = field(default_factory=list)
    absorbed: set[fx.Node] = field(default_factory=set)  # adds a recognised op took over
    # a tied weight's key -> its owner's, where the owner is outside the tied node's block
    # (archcomp/importer/shared.py), and the call and text a refusal of it names
    lifted: dict[str, str] = field(default_factory=dict)
    lifted_at: dict[str, tuple[fx.Node, str]] = field(default_factory=dict)
    _live: set[fx.Node] | None = None
    # every input's leading size -> its symbol (CLIP's N texts, B images), beside ``dims``
    batches: dict[int, str] = field(default_factory=dict)

    def live(self) -> set[fx.Node]:
        """The calls an output depends on (the others compute what nothing reads)."""
        if self._live is None:
            self._live, todo = set(), [o for o in self.flat.outputs if isinstance(o, fx.Node)]
            while todo:
                n = todo.pop()
                if n not in self._live:
                    self._live.add(n)
                    todo.extend(self.flat.args_of(n))
        return self._live

    def body(
        self, path: str, given: list[fx.Node], names: list[str], outs: list[fx.Node] | None = None
    ) -> Body | None:
        """The body of the module at ``path`` whose inputs are ``given`` (named ``names``) and
        whose outputs are ``outs``, in the caller's order (default: the values read outside)."""
        before = len(self.problems)
        items = _Scope(self, path).items()
        if not path and len(self.problems) == before:  # a tie whose owner no body holds
            for key in self.lifted:
                n, what = self.lifted_at[key]
                pname = key.rpartition(".")[2]
                self.fail(n, what, f"its {pname} is {self.lifted[key]}, which no node holds")
        if len(self.problems) > before:
            return None
        outs = outs if outs is not None else _outs(self.flat, path, items)
        body = _emit(self, items, given, names, outs)
        body["shapes"] = f"{self.shapes(given)} -> {self.shapes(outs)}"
        return body

    def shapes(self, nodes: list[fx.Node]) -> str:
        """``(B, T, hidden_size)``: the shapes of ``nodes``, sizes named where known."""
        out = []
        for n in nodes:
            v = self.flat.padding.get(n, n).meta.get("val")  # a padding mask: its input's
            shape = list(getattr(v, "shape", ()))
            dims = [
                self.dims[i][1]
                if i < len(self.dims) and s == self.dims[i][0]
                else self.batches[int(s)]
                if i == 0 and int(s) in self.batches
                else self.sizes.get(int(s), str(s))
                if _feature_dim(i, len(shape))
                else str(s)
                for i, s in enumerate(shape)
            ]
            out.append(f"({', '.join(dims)})")
        return ", ".join(out)

    def block(
        self, path: str, m: nn.Module, given: list[fx.Node], outs: list[fx.Node]
    ) -> str | None:
        copy = re.search(r"\.\d+$", path) is not None  # of a repeat: names as every copy's
        names = [
            (None if copy else self.flat.inputs.get(g)) or ("x" if i == 0 else f"x_{i + 1}")
            for i, g in enumerate(given)
        ]
        body = mamba_mixer(self.flat, path, m, given)  # transformers' MambaMixer, whole
        if body is not None:
            body["shapes"] = f"{self.shapes(given)} -> {self.shapes(outs)}"
        else:
            body = self.body(path, given, names, outs)
        if body is None:
            return None
        key = type(m).__name__ + json.dumps(body, sort_keys=True, default=str)
        if key not in self.keys:
            base, n = _snake(type(m).__name__), 2
            name = base
            while name in self.blocks:
                name, n = f"{base}_{n}", n + 1
            self.keys[key], self.blocks[name] = name, body
        return self.keys[key]

    def add(self, base: str, body: Body) -> str:
        """The name of a block written whole by a recogniser (T5's), equal bodies shared."""
        key = "made:" + json.dumps(body, sort_keys=True, default=str)
        if key not in self.keys:
            name, n = base, 2
            while name in self.blocks:
                name, n = f"{base}_{n}", n + 1
            self.keys[key], self.blocks[name] = name, body
        return self.keys[key]

    def _block_alternatives(self, body: Body) -> bool:
        """Whether ``body`` has alternatives (nodes sharing an id) that each call a block."""
        ids = [n["id"] for n in body["nodes"]]
        return any(
            ids.count(n["id"]) > 1
            and all(m["op"] in self.blocks for m in body["nodes"] if m["id"] == n["id"])
            for n in body["nodes"]
        )

    def merged(self, run: list[Item]) -> tuple[str, dict[str, Any]] | None:
        """One op, or one block reading ``index``, for a run of copies that differ
        (:mod:`archcomp.importer.unify`); None where they cannot be one."""
        if not all(x.op in self.blocks for x in run):
            args = unify_ops([(x.op, x.opts) for x in run])
            return None if args is None else (run[0].op, args)
        bodies = [self.blocks[x.op] for x in run]
        body = unify(bodies)
        if body is None or self._block_alternatives(body):
            # copies that call different blocks: one block with params where they merge so
            # (Swin's stages), alternatives by `when` otherwise (a ResNet stage's first block)
            nested = merge_nested(run, self)
            if nested is not None or body is None:
                return nested
        body["shapes"] = bodies[0].get("shapes")
        key = "unified:" + json.dumps(body, sort_keys=True, default=str)
        if key not in self.keys:
            base = re.sub(r"_?\d+$", "", run[0].op) or run[0].op
            name, n = base, 2
            while name in self.blocks:
                name, n = f"{base}_{n}", n + 1
            self.keys[key], self.blocks[name] = name, body
        return self.keys[key], {}

    def fail(self, n: fx.Node, what: str, why: str) -> None:
        self.problems.append(f"{what} ({why}) at {self.flat.source(n)}")


def _outs(flat: Flat, path: str, items: list[Item]) -> list[fx.Node]:
    """The values of the body that are read outside ``path`` (or are the model's outputs)."""
    inside = set().union(*(i.calls for i in items)) if items else set()
    outs = []
    for it in items:
        for o in it.outs:
            used = any(u not in inside for u in flat.users.get(o, [])) or o in flat.outputs
            if used and o not in outs:
                outs.append(o)
    return outs


@dataclass
class _Scope:
    w: Walker
    path: str

    def _child(self, n: fx.Node) -> str | None:
        s = self.w.flat.scope.get(n, ())
        if not self.path:
            return s[0] if s else None
        i = s.index(self.path)
        return s[i + 1] if i + 1 < len(s) else None

    def items(self) -> list[Item]:
        flat = self.w.flat
        members = [
            n
            for n in flat.order
            if n not in flat.context
            and (not self.path or self.path in flat.scope[n])
            and n in self.w.live()  # not a dead call (BART's x[:, :, -1] read for a shape)
        ]
        groups: list[tuple[str | None, list[fx.Node]]] = []
        for n in members:
            c = self._child(n)
            if c is not None and groups and groups[-1][0] == c:
                groups[-1][1].append(n)
            else:
                groups.append((c, [n]))
        items = [  # owners of shared weights that no forward calls (model.shared)
            Item(rel, "parameter", [], {"shape": list(shape)}, [], set())
            for rel, shape in uncalled_owners(flat, self.path)
        ]
        for name, shape in own_owners(flat, self.path):  # a bare one (BERT's predictions.bias)
            key = f"{self.path}.{name}" if self.path else name
            read = [a for a, k in flat.weights.items() if k == key and a not in flat.context]
            self.w.tensors.update(read)  # its own calls read this node (parameters.py)
            items.append(
                Item(name, "parameter", [], {"shape": list(shape), "key": "self"}, read, set())
            )
        for c, g in groups:
            seq = self._sequential(c) if c is not None else None
            seq = self._channels_first(c, g) if c is not None and seq is None else seq
            items += self._tensors(g[0]) if c is None else []  # bare parameters it reads first
            one = self._item(c, g) if seq is None else None
            if seq is not None:
                items += seq
            elif isinstance(one, Item):
                items += [*one.extra.pop("before", []), one]  # a mask before its attention
            else:
                items += one or []
        kept = fold_patch_merging(fold_positions(items, self.w), self.w.flat)
        return _repeats(merge_alternating(kept, self.w), self.w, self.path) + self._unread(items)

    def _unread(self, items: list[Item]) -> list[Item]:
        """This module's tensors that no call reads (DINOv2's ``mask_token``), held by
        ``unused: true`` nodes (:mod:`archcomp.importer.unread`)."""
        m, taken = self.w.flat.model.get_submodule(self.path), {it.id for it in items}
        held = unread_tensors(m, read_tensors(self.w.flat), taken)
        return [Item(h.pop("id"), h.pop("op"), [], h, [], set()) for h in held]

    def _tensors(self, n: fx.Node) -> list[Item]:
        """A ``parameter`` (or ``buffer``) node, ``key: self``, for each bare parameter (or
        buffer) of this module that the own call ``n`` is the first to read
        (:mod:`archcomp.importer.parameters`); a buffer none may be is refused here."""
        out = []
        for a in self.w.flat.args_of(n):
            own = own_tensor(self.w.flat, self.path, a) if a not in self.w.tensors else None
            if isinstance(own, str):
                where = f"{self.path}: " if self.path else ""
                self.w.fail(n, f"{where}{n.target}", f"reads {self.w.flat.weights[a]}: {own}")
                self.w.tensors.add(a)  # refused once
            elif own is not None:
                self.w.tensors.add(a)
                out.append(Item(own.name, own.op, [], own.opts(), [a], set()))
        return out

    def _expand(self, n: fx.Node, calls: set[fx.Node], where: str) -> Item | None:
        flat = self.w.flat
        sizes = n.args[1] if isinstance(n.args[1], list | tuple) else ()
        lead = sizes[0] if sizes and isinstance(sizes[0], int) else None
        batch = (lead, self.w.batches[lead]) if lead in self.w.batches else None
        made = expand_to_batch(flat, n, batch or (self.w.dims[0] if self.w.dims else None))
        if isinstance(made, str):
            self.w.fail(n, f"{where}{n.target}", made)
            return None
        like, opts = made
        x = flat.get(n.args[0])
        ins: Any = {"x": x, "like": like} if like is not None else [x]
        return Item("expand", "expand", ins, opts, [n], calls)

    def _sequential(self, child: str) -> list[Item] | None:
        """An nn.Sequential's children as items of this level (``layers.0``, ``layers.1``, ...,
        a repeat where they are equal), as a ModuleList's are: its parameters are
        ``layers.0.*``, which a block of its own would have no node id for."""
        m = self.w.flat.model.get_submodule(child)
        if type(m) is not nn.Sequential:
            return None
        inner = _Scope(self.w, child).items()
        rel = self._rel(child)
        for it in inner:
            it.id = f"{rel}.{it.id}"
        return inner

    def _channels_first(self, child: str, group: list[fx.Node]) -> list[Item] | None:
        """A channels-first LayerNorm (ConvNeXt's) as ``permute``, ``layer_norm`` (the
        module's id) and ``permute`` back (:mod:`archcomp.importer.channels`)."""
        flat, rel = self.w.flat, self._rel(child)
        made = channels_first(flat, child, flat.model.get_submodule(child), group)
        if made is None or reserved_id(rel):
            return None
        last, norm, first, args = made
        x, at = flat.get(last.args[0]), rel.rsplit(".", 1)[0] + "." if "." in rel else ""
        return [  # in P.0's run, P.channels_last: a node of P's block (ordered.py)
            Item(f"{at}channels_last", "permute", [x], {"dims": TO_LAST}, [last], {last}),
            Item(rel, "layer_norm", [last], without_defaults("layer_norm", args), [norm], {norm}),
            Item(f"{at}channels_first", "permute", [norm], {"dims": TO_FIRST}, [first], {first}),
        ]

    def _rel(self, child: str) -> str:
        return child[len(self.path) + 1 :] if self.path else child

    def _item(self, child: str | None, group: list[fx.Node]) -> Item | list[Item] | None:
        flat = self.w.flat
        calls = set(group)
        ins: list[fx.Node] = []
        for n in group:
            for a in flat.args_of(n):
                if (
                    a not in calls
                    and a not in flat.context
                    and a not in flat.weights
                    and a not in flat.unread  # a causal mask input: the attention's causal
                    and a not in ins
                ):
                    ins.append(a)
        live = self.w.live()
        outs = [
            n
            for n in group
            if any(u not in calls and u in live for u in flat.users.get(n, [])) or n in flat.outputs
        ]
        if child is None:
            return self._own(group[0], calls)
        m = flat.model.get_submodule(child)
        rel = self._rel(child)
        if reserved_id(rel) and any(True for _ in m.parameters()):
            why = (
                f"{rel!r} is reserved in specs (a node id may not be it), so its keys cannot match"
            )
            self.w.fail(group[0], f"{type(m).__name__} self.{child}", why)
            return None
        if is_stack(m):
            return self._t5(child, m, group, ins, outs)
        made = recognise_any(flat, child, m, group)
        if isinstance(made, str):
            self.w.fail(group[0], f"{type(m).__name__} self.{child}", made)
            return None
        ports = made[1].pop("_ports", None) if isinstance(made, tuple) else None
        invert = made[1].pop("_invert_mask", False) if isinstance(made, tuple) else False
        before = made[1].pop("_before", []) if isinstance(made, tuple) else []
        if isinstance(made, tuple) and made[1].pop("_absorb", False):  # positions, added to x
            got = absorbed_add(flat, outs[0]) if len(outs) == 1 and not ins else None
            if got is None:
                why = f"a {made[0]} whose result is not added to one input"
                self.w.fail(group[0], f"{type(m).__name__} self.{child}", why)
                return None
            ins, outs = [got[0]], [got[1]]
            calls.add(got[1])
            self.w.absorbed.add(got[1])
        tied: dict[str, str] = {}
        if made is None:
            name = self.w.block(child, m, ins, outs)
            if name is None:
                return None
            op, opts = name, {}
            tied = lifted_ties(self.w.lifted, self.path, child)
        elif not ins and made[0] == "embedding" and (pos := position_table(flat, m, group)):
            op, opts = "learned_positional_encoding", pos  # fold_positions joins its add
        elif len(outs) != 1 or (len(ins) != 1 and ports is None):
            why = f"a {made[0]} of {len(ins)} inputs and {len(outs)} results read outside it"
            self.w.fail(group[0], f"{type(m).__name__} self.{child}", why)
            return None
        else:
            op, opts = made[0], without_defaults(made[0], made[1])
        item = Item(rel, op, ports or ins, opts, outs, calls)  # ports: {query: .., key: ..}
        if before:  # nodes the op's ports read that its module did not compute (a mask)
            item.extra["before"] = [Item(i, o, [x], a, [t], set()) for i, o, x, a, t in before]
        if made is None and tied:  # ties of nodes inside this call to weights seen here
            item.extra["tie"] = tied
        for pname, tie in shared_ties(flat.model).get(child, {}).items():
            if self.path and not tie.startswith(self.path + "."):
                self.w.lifted[f"{child}.{pname}"] = tie  # tied by a call further up
                self.w.lifted_at[f"{child}.{pname}"] = (
                    group[0],
                    f"{type(m).__name__} self.{child}",
                )
            else:
                rel_tie = tie[len(self.path) + 1 :] if self.path else tie
                item.extra.setdefault("tie", {})[pname] = rel_tie
        if invert and isinstance(ports, dict):  # torch's bool attn_mask hides True
            item.extra.setdefault("before", []).append(self._kept(rel, ports, group))
        return item

    def _kept(self, rel: str, ports: dict[str, fx.Node], group: list[fx.Node]) -> Item:
        """``{id: <attn>_keep, op: logical_not, in: <mask>}`` before the attention, which then
        reads it: torch's bool attn_mask is True where a key is hidden, the op's where it takes
        part. Its value is named by the attention's first call that reads the mask."""
        flat, mask = self.w.flat, ports["mask"]
        handle = next(n for n in group if mask in flat.args_of(n))
        ports["mask"] = handle
        return Item(f"{rel}_keep", "logical_not", [mask], {}, [handle], set())

    def _padding(self, end: fx.Node) -> Item:
        """``{id: padding_mask, op: eq, in: attention_mask, scalar: 0}``: True at the keys the
        mask hides, as key_padding_mask takes them (archcomp/importer/padding.py)."""
        flat = self.w.flat
        calls = {c for c, e in flat.padded.items() if e is end}
        return Item("padding_mask", "eq", [flat.padding[end]], {"scalar": 0}, [end], calls)

    def _cast(self, n: fx.Node, calls: set[fx.Node], where: str) -> Item | None:
        """A cast to an integer or bool dtype (CLIP's ``input_ids.to(torch.int)``) as ``cast``;
        to a float dtype it would fix the build's dtype: refused."""
        v = n.meta.get("val")
        dtype = str(getattr(v, "dtype", "")).removeprefix("torch.")
        if dtype not in ("int64", "int32", "bool"):
            self.w.fail(n, f"{where}{n.target}", f"a cast to {dtype or 'an unknown dtype'}")
            return None
        return Item("cast", "cast", [self.w.flat.get(n.args[0])], {"dtype": dtype}, [n], calls)

    def _t5(
        self,
        child: str,
        m: nn.Module,
        group: list[fx.Node],
        ins: list[fx.Node],
        outs: list[fx.Node],
    ) -> Item | None:
        """A T5Stack as the blocks :mod:`archcomp.importer.t5` writes; its embed_tokens tied
        from this call where its weight is another module's (``shared``)."""
        what = f"{type(m).__name__} self.{child}"
        dec = bool(getattr(m, "is_decoder", False))
        if len(ins) != 1 + dec or len(outs) != 1:
            why = f"a T5Stack of {len(ins)} inputs and {len(outs)} results read outside it"
            self.w.fail(group[0], what, why)
            return None
        seq = self.w.shapes(ins[:1])[1:-1].split(", ")[-1]  # (B, S) -> S
        seq = ("T" if dec else "S") if seq.isdigit() else seq  # hf_inputs' names
        batch = self.w.dims[0][1] if self.w.dims else "B"
        try:
            name = stack_block(m, self.w.add, batch, seq)
            check_buckets(self.w.flat, child, m, group)
        except Refused as e:
            at = f"{child}.{e.at}" if e.at else child
            first = next((n for n in group if at in self.w.flat.scope[n]), group[0])
            self.w.fail(first, what, str(e))
            return None
        stray = stray_calls(self.w.flat, child, group)
        for n, why in stray:
            self.w.fail(n, f"{child}: {n.target}", why)
        if stray:
            return None
        emb = getattr(m, "embed_tokens", None)
        path = f"{child}.embed_tokens"
        tie = (
            shared_ties(self.w.flat.model).get(path, {}).get("weight") if emb is not None else None
        )
        if tie:
            self.w.lifted[f"{child}.embed_tokens.weight"] = tie
            self.w.lifted_at[f"{child}.embed_tokens.weight"] = (group[0], what)
        ports: Any = {"input_ids": ins[0], "encoder_hidden_states": ins[1]} if dec else ins
        item = Item(self._rel(child), name, ports, {}, outs, set(group))
        tied = lifted_ties(self.w.lifted, self.path, child)
        if tied:
            item.extra["tie"] = tied
        return item

    def _chunk(self, n: fx.Node, calls: set[fx.Node], where: str) -> Item | None:
        made = _chunk_item(self.w.flat, n, calls)
        if isinstance(made, str):
            self.w.fail(n, f"{where}{n.target}", made)
            return None
        return made

    def _own(self, n: fx.Node, calls: set[fx.Node]) -> Item | list[Item] | None:
        flat = self.w.flat
        where = f"{self.path}: " if self.path else ""
        if n in self.w.absorbed:
            return None
        if n in flat.padded:  # a padding mask's calls: one node, at the chain's end
            return self._padding(n) if flat.padded[n] is n else None
        if str(n.target) == pooling.INDEX:  # CLIP's x[arange(N), eos positions]
            steps = pooling.rows_at(flat, n)
            if isinstance(steps, str):
                self.w.fail(n, f"{where}{n.target}", steps)
                return None
            return [Item(i, op, ins, o, [out], calls) for i, op, ins, o, out in steps]
        if str(n.target) == _CHUNK:
            return self._chunk(n, calls, where)
        if n.target is operator.getitem and str(getattr(n.args[0], "target", "")) == _CHUNK:
            return None  # a piece of a chunk: the split node's result outJ
        fn = ATEN.get(str(n.target))
        family = own_call(flat, n)
        if family is not None:
            return Item("select" if family[0] == "index" else family[0], *family, [n], calls)
        for a in flat.args_of(n):
            if a in flat.weights and a not in self.w.tensors:
                self.w.fail(n, f"{where}{n.target}", f"reads the tensor {flat.weights[a]} directly")
                return None
            if a in flat.context and a not in self.w.tensors:
                self.w.fail(
                    n,
                    f"{where}{n.target}",
                    "reads a mask, position or RoPE table no recognised op takes",
                )
                return None
        if str(n.target) == "aten.expand.default":
            return self._expand(n, calls, where)
        if str(n.target) in CASTS:
            return self._cast(n, calls, where)
        if fn is None:
            self.w.fail(n, f"{where}{n.target}", "no archcomp op for it")
            return None
        if str(n.target).endswith("_.Tensor") and _read_after(flat, n):
            self.w.fail(n, f"{where}{n.target}", "in place, on a tensor read after it")
            return None
        named = {a.name: a for a in flat.args_of(n)}
        args: Any = fx.node.map_arg(n.args, lambda a: Ref(flat.get(a).name))  # type: ignore[arg-type,return-value]
        kwargs: Any = fx.node.map_arg(n.kwargs, lambda a: Ref(flat.get(a).name))  # type: ignore[arg-type,return-value]
        try:
            made = call_op(fn, args, kwargs)
        except (Unsupported, KeyError, IndexError, TypeError, ValueError) as e:
            self.w.fail(n, f"{where}{n.target}", str(e) or type(e).__name__)
            return None
        if isinstance(made, Ref):
            flat.canon[n] = named[made.name]
            return None
        op, ins, opts = made
        if op == "reshape":  # the traced batch size first: -1
            opts = batch_free(flat, n, opts, self.w.dims)
        back = (
            [named[r.name] for r in ins]
            if isinstance(ins, list)
            else {k: named[r.name] for k, r in ins.items()}
        )
        return Item(op, op, back, without_defaults(op, opts), [n], calls)  # ids: add, add_1, ...


def _read_after(flat: Flat, n: fx.Node) -> bool:
    """Whether the tensor an in-place call writes is read by a later call than ``n``."""
    x = flat.get(n.args[0])
    at = flat.order.index(n)
    return any(u is not n and flat.order.index(u) > at for u in flat.users.get(x, []))


def _chunk_item(flat: Flat, n: fx.Node, calls: set[fx.Node]) -> Item | str:
    """``x.chunk(c, dim)`` read piece by piece (``gate, up = x.chunk(2, -1)``) as ``split``."""
    x, chunks, dim = (*n.args, 0)[:3]
    pieces: dict[Any, fx.Node] = {u.args[1]: u for u in n.users if u.target is operator.getitem}
    if (
        not isinstance(x, fx.Node)
        or not isinstance(chunks, int)
        or sorted(pieces) != list(range(chunks))
    ):
        return "a chunk whose pieces are not each read by index"
    outs = [pieces[i] for i in range(chunks)]
    opts = without_defaults("split", {"chunks": chunks, "dim": dim})
    return Item("split", "split", [flat.get(x)], opts, outs, calls | set(outs))


def _feature_dim(i: int, rank: int) -> bool:
    """Whether dim ``i`` holds features, the only dims a config's width may name: the channels
    of a (B, C, H, W) map, the last dim of any other shape (never a spatial size that happens
    to equal a width: Swin's 32 x 32 image beside its hidden_size 32)."""
    return i == 1 if rank == 4 else i == rank - 1


def _repeats(items: list[Item], w: Walker, path: str) -> list[Item]:
    """Runs of ``P.0``, ``P.1``, ... each on the one before with the same op: one repeat (of
    one copy too: its parameters are ``P.0.*``). Any other dotted path is no node id."""
    flat, out, i = w.flat, [], 0
    while i < len(items):
        m = _NUMBERED.match(items[i].id)
        n = 1
        if m is not None and m.group(2) == "0":
            while i + n < len(items):
                prev, cur = items[i + n - 1], items[i + n]
                if (
                    cur.id != f"{m.group(1)}.{n}"
                    or not _chained(cur, prev, first=items[i])
                    or len(prev.outs) != 1
                    or any(
                        u not in cur.calls and u in w.live()  # not a dead read (Swin's stage
                        for u in flat.users.get(prev.outs[0], [])  # output also as a map)
                    )
                ):
                    break
                n += 1
        op, opts = items[i].op, items[i].opts
        merged = None
        if any((x.op, x.opts) != (op, opts) for x in items[i : i + n]):
            merged = w.merged(items[i : i + n])  # copies that differ through index
        run = run_length(items, i)  # P.0, P.1, ... by their ids, chained or not
        one = merged is not None or all((x.op, x.opts) == (op, opts) for x in items[i : i + n])
        if run is not None and (run[1] != n or not one):  # not one repeat: nodes 0, 1, ...
            block = ordered_block(items[i : i + run[1]], w, run[0], _emit)
            if block is not None:
                out.append(Item(run[0], block[0], block[1], {}, block[2], block[3]))
                i += run[1]
                continue
        if merged is not None:
            op, opts = merged
        elif not one:  # the run of equal copies only; the next one is refused
            n = next(
                k
                for k in range(1, n + 1)
                if k == n or (items[i + k].op, items[i + k].opts) != (op, opts)
            )
        first, last = items[i], items[i + n - 1]
        if "." in first.id and (m is None or m.group(2) != "0"):
            where = f"{path}.{first.id}" if path else first.id
            why = (
                "its path is no node id: a numbered child that differs from the ones before it "
                "(each copy of a repeat computes the same), or a module called past its parent"
            )
            w.fail(min(first.calls, key=flat.order.index), f"self.{where}", why)
        elif m is not None:
            calls = set().union(*(x.calls for x in items[i : i + n]))
            extra: dict[str, Any] = {"repeat": n}
            ties = [x.extra.get("tie") for x in items[i : i + n]]
            if ties[0] and all(t == ties[0] for t in ties):  # every copy's, into the copy
                extra["tie"] = ties[0]
            elif any(ties):
                why = "copies of a repeat whose weights are tied differently"
                w.fail(min(first.calls, key=flat.order.index), f"self.{first.id}", why)
            first = Item(m.group(1), op, first.ins, opts, last.outs, calls, extra)
        out.append(first)
        i += n
    return out


def _chained(cur: Item, prev: Item, first: Item) -> bool:
    """Whether ``cur`` reads ``prev``'s result first and the run's first copy's other inputs
    (a decoder layer's encoder output) after it."""
    ins, head = list(cur.ins) if isinstance(cur.ins, list) else [], list(first.ins)
    return ins[:1] == prev.outs[:1] and ins[1:] == head[1:]


def _emit(
    w: Walker, items: list[Item], given: list[fx.Node], names: list[str], outs: list[fx.Node]
) -> Body:
    name: dict[fx.Node, str] = dict(zip(given, names, strict=True))
    ids = set(names)
    nodes: list[dict[str, Any]] = []
    prev = names[0] if names else None
    for it in items:
        nid = re.sub(r"\W", "_", it.id)
        base, k = nid if not reserved_id(nid) else f"{nid}_op", 1
        nid = base
        while nid in ids:
            nid, k = f"{base}_{k}", k + 1
        ids.add(nid)
        entry: dict[str, Any] = {"id": nid, "op": it.op}
        if isinstance(it.ins, dict):
            entry["in"] = {k2: name.get(v, "?") for k2, v in it.ins.items()}
        else:
            refs = [name.get(v, "?") for v in it.ins]
            if refs and not (len(refs) == 1 and refs[0] == prev and it.op != "concat"):
                entry["in"] = refs[0] if len(refs) == 1 and it.op != "concat" else refs
        nodes.append(entry | it.extra | it.opts)
        if len(it.outs) == 1:
            name[it.outs[0]] = nid
            prev = nid
        else:
            for j, o in enumerate(it.outs):
                name[o] = f"{nid}.out{j}"
            prev = None
    for n in (*given, *outs):
        if n not in name:
            w.problems.append(f"a value of the graph ({n.name}) that no node gives")
    result: Any = (
        name.get(outs[0], "?")
        if len(outs) == 1
        else {f"out{j}": name.get(o, "?") for j, o in enumerate(outs)}
    )
    return {"inputs": names, "nodes": nodes, "outputs": result}
