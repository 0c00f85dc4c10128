"""What each axis of a tensor is — the batch, the channels, a spatial axis of the input — and how
ops carry that from their inputs to their outputs (docs/method.md §5.1).

A :class:`Layout` names the role of every axis: ``"N"`` the batch, ``"C"`` the channels, ``"S0"``,
``"S1"``… the input's spatial axes in the input's order, ``"1"`` an axis of size one that an op
added, ``"C*"`` / ``"S0*"`` a part of the channels or of a spatial axis that a Reshape split off
(a channel shuffle splits the channels and merges them back), and ``None`` an axis whose role no
rule could derive (a Flatten that mixes channels and positions). A rule's ``layout(node, graph,
layouts)`` gives its output's layout from its inputs' (``layouts`` maps a tensor to its Layout or
None; constants have none); ops that read their input as (N, C, spatial…) — convolutions and
pooling — say so with ``channels_first``, which is how the input's own layout is read from what
the graph does with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

BATCH, CHANNELS, SINGLETON = "N", "C", "1"


def spatial_role(index: int) -> str:
    return f"S{index}"


def part_of(role: str) -> str:
    return role + "*"


@dataclass(frozen=True)
class Layout:
    axes: tuple[Optional[str], ...]

    @classmethod
    def channels_first(cls, rank: int) -> "Layout":
        return cls((BATCH, CHANNELS) + tuple(spatial_role(i) for i in range(rank - 2)))

    @classmethod
    def channels_last(cls, rank: int) -> "Layout":
        return cls((BATCH,) + tuple(spatial_role(i) for i in range(rank - 2)) + (CHANNELS,))

    @property
    def rank(self) -> int:
        return len(self.axes)

    @property
    def channel_axis(self) -> Optional[int]:
        return self.axes.index(CHANNELS) if self.axes.count(CHANNELS) == 1 else None

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        """The spatial axes, in the input's order of them."""
        spatial = [(role, axis) for axis, role in enumerate(self.axes)
                   if role and role[0] == "S" and not role.endswith("*")]
        return tuple(axis for role, axis in sorted(spatial, key=lambda pair: int(pair[0][1:])))

    @property
    def is_channels_first(self) -> bool:
        """(N, C, spatial…), an axis of size one standing for a spatial axis."""
        spatial = set(self.spatial_axes)
        return self.axes[:2] == (BATCH, CHANNELS) and all(
            axis in spatial or role == SINGLETON for axis, role in enumerate(self.axes[2:], 2))

    def why_no_map(self) -> Optional[str]:
        """Why a tensor of this layout cannot carry a map, or None when it can."""
        if self.axes[:1] != (BATCH,):
            return "its first axis is not the batch"
        split = [axis for axis, role in enumerate(self.axes) if role and role.endswith("*")]
        if split:
            part = "channels" if self.axes[split[0]] == part_of(CHANNELS) else "a spatial axis"
            return f"a Reshape split its {part} over several axes"
        unknown = [axis for axis, role in enumerate(self.axes) if role is None]
        if unknown:
            return f"its axis {unknown[0]} mixes channels and positions"
        if self.channel_axis is None:
            return "no single axis of it holds the channels"
        if not self.spatial_axes:
            return "it has no spatial axes"
        if len(set(self.axes) - {SINGLETON}) != len([r for r in self.axes if r != SINGLETON]):
            return "two of its axes claim the same role"
        return None

    @property
    def letters(self) -> str:
        """"NCHW", "NHWC", "NCL", "NCDHW"…: the axes by the letters the field names them with
        (``?`` unknown, ``c``/``s`` part of the channels or of a spatial axis, ``1`` size one)."""
        spatial = [role for role in self.axes if role and role[0] == "S" and not role.endswith("*")]
        names = {"1": "L", "2": "HW", "3": "DHW"}.get(str(len(spatial)), "")
        letter = {role: names[i] if names else "S" for i, role in
                  enumerate(sorted(spatial, key=lambda r: int(r[1:])))}
        return "".join("?" if role is None else letter.get(role) or
                       ("c" if role.startswith("C") and role.endswith("*") else
                        "s" if role.endswith("*") else role) for role in self.axes)


LayoutMap = Mapping[str, Optional[Layout]]


def _one_value(shape) -> bool:
    """A tensor known to hold one value (a scale computed at run time): it broadcasts everywhere."""
    return shape is not None and all(d == 1 for d in shape)


def first_input_layout(node, graph, layouts: LayoutMap) -> Optional[Layout]:
    """``layout`` of ops whose output is laid out as their first input, whatever the others."""
    return layouts.get(node.inputs[0])


def channels_first_layout(node, graph, layouts: LayoutMap) -> Optional[Layout]:
    """``layout`` of ops that read (N, C, spatial…) and write the same (Conv, pooling): the
    input's layout when it is that, else unknown (the graph does not read the input that way)."""
    layout = layouts.get(node.inputs[0])
    return layout if layout is not None and layout.is_channels_first else None


# the parts of a Rule for ops that read their first input as (N, C, spatial…)
CHANNELS_FIRST = dict(channels_first=True, layout=channels_first_layout)


# ---- layout declarations of rules -----------------------------------------------------------------

def merged_layout(node, graph, layouts: LayoutMap) -> Optional[Layout]:
    """``layout`` of element-wise and broadcasting ops (and of Concat, Pad, Slice, Split…): the
    activations' layouts, axis by axis, where they agree; an operand of size one along an axis
    (broadcast there) does not vote on it."""
    names = [name for name in node.inputs
             if name and not graph.is_constant(name) and not _one_value(graph.shapes.get(name))]
    known = [(layouts.get(name), graph.shapes.get(name)) for name in names]
    if not known or any(layout is None for layout, _ in known):
        return None
    rank = max(layout.rank for layout, _ in known)
    axes = []
    for axis in range(rank):
        votes, fallback = set(), None
        for layout, shape in known:
            offset = axis - (rank - layout.rank)
            if offset < 0:
                continue
            role = layout.axes[offset]
            fallback = fallback or role
            if shape is not None and len(shape) == layout.rank and shape[offset] == 1:
                continue
            votes.add(role)
        axes.append(votes.pop() if len(votes) == 1 else (fallback if not votes else None))
    return Layout(tuple(axes))


def transposed_layout(node, graph, layouts: LayoutMap) -> Optional[Layout]:
    layout = layouts.get(node.inputs[0])
    if layout is None:
        return None
    perm = node.attrs.get("perm") or tuple(reversed(range(layout.rank)))
    return Layout(tuple(layout.axes[int(axis)] for axis in perm))


def reduced_layout(axes_of):
    """``layout`` of a reduction whose reduced axes ``axes_of(node, rank)`` gives (None: all):
    kept axes keep their role; with ``keepdims`` the reduced ones stay, of size one."""
    def layout(node, graph, layouts: LayoutMap) -> Optional[Layout]:
        source = layouts.get(node.inputs[0])
        if source is None:
            return None
        axes = axes_of(node, source.rank)
        reduced = set(range(source.rank)) if axes is None else set(axes)
        if node.attrs.get("keepdims", 1):
            return source
        return Layout(tuple(role for axis, role in enumerate(source.axes) if axis not in reduced))
    return layout


def gathered_layout(node, graph, layouts: LayoutMap) -> Optional[Layout]:
    """A Gather by a scalar index removes its axis; by an array of indices, keeps it."""
    source = layouts.get(node.inputs[0])
    indices = graph.constant(node.inputs[1])
    if source is None or indices is None:
        return None
    axis = node.attrs.get("axis", 0) % source.rank
    if indices.ndim == 0:
        return Layout(source.axes[:axis] + source.axes[axis + 1:])
    if indices.ndim == 1:
        return source
    return None


def matrix_layout(activation_index):
    """``layout`` of Gemm and MatMul: the activation's axes, its last one (the contracted
    features) replaced by the output features — channels when the features were channels."""
    def layout(node, graph, layouts: LayoutMap) -> Optional[Layout]:
        source = layouts.get(node.inputs[activation_index(node, graph)[0]])
        if source is None or source.rank < 2:
            return None
        if node.op_type == "Gemm" and node.attrs.get("transA"):
            return None
        last = CHANNELS if source.axes[-1] == CHANNELS else None
        return Layout(source.axes[:-1] + (last,))
    return layout


def reshaped_layout(node, graph, layouts: LayoutMap) -> Optional[Layout]:
    """``layout`` of Reshape, Flatten, Squeeze and Unsqueeze, from the static shapes: axes are
    matched in groups of equal size; an axis kept whole keeps its role, axes of size one come and
    go, a split axis becomes parts of its role, and parts merged back whole regain it (a channel
    shuffle); any other merge leaves the role unknown."""
    source = layouts.get(node.inputs[0])
    in_shape, out_shape = graph.shapes.get(node.inputs[0]), graph.shapes.get(node.outputs[0])
    if source is None or in_shape is None or out_shape is None or len(in_shape) != source.rank:
        return None
    in_shape, out_shape = list(in_shape), list(out_shape)
    # a batch size known only at run time matches the other side's batch
    if in_shape and out_shape and in_shape[0] is None and out_shape[0] is None:
        in_shape[0] = out_shape[0] = -1
    if not (_static_or_batch(in_shape) and _static_or_batch(out_shape)):
        return _without_singletons(source, in_shape, out_shape)
    return _grouped(source, in_shape, out_shape)


def _static_or_batch(shape) -> bool:
    return all(isinstance(d, int) for d in shape)


def _without_singletons(source: Layout, in_shape, out_shape) -> Optional[Layout]:
    """Where sizes are unknown, only a reshape that adds or removes axes of size one is read."""
    kept_in = [axis for axis, d in enumerate(in_shape) if d != 1]
    kept_out = [axis for axis, d in enumerate(out_shape) if d != 1]
    if len(kept_in) != len(kept_out) or any(
            in_shape[a] is not None and out_shape[b] is not None and in_shape[a] != out_shape[b]
            for a, b in zip(kept_in, kept_out)):
        return None
    axes = [SINGLETON] * len(out_shape)
    for a, b in zip(kept_in, kept_out):
        axes[b] = source.axes[a]
    return Layout(tuple(axes))


def _grouped(source: Layout, in_shape, out_shape) -> Optional[Layout]:
    """Axes matched in the smallest runs of equal total size, left to right."""
    batch = 1_000_003          # stands for a batch size known only at run time (-1 here)
    a = [batch if d == -1 else d for d in in_shape]
    b = [batch if d == -1 else d for d in out_shape]
    axes: list[Optional[str]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        group_in, group_out = [i], [j]
        size_in, size_out = a[i], b[j]
        i, j = i + 1, j + 1
        while size_in != size_out:
            if size_in < size_out and i < len(a):
                group_in.append(i)
                size_in, i = size_in * a[i], i + 1
            elif size_out < size_in and j < len(b):
                group_out.append(j)
                size_out, j = size_out * b[j], j + 1
            else:
                return None
        if len(group_in) == len(group_out) == 1:      # an axis kept as it is, of size one or not
            axes.append(source.axes[group_in[0]])
            continue
        axes.extend(_group_roles([source.axes[k] for k in group_in if a[k] != 1],
                                 [b[k] for k in group_out]))
    if any(d != 1 for d in a[i:]) or any(d != 1 for d in b[j:]):
        return None
    axes.extend([SINGLETON] * (len(b) - j))
    return Layout(tuple(axes))


def _group_roles(roles: list[Optional[str]], out_sizes: list[int]) -> list[Optional[str]]:
    """The roles of one group's output axes from the roles of its input axes (size one left out)."""
    wide = [k for k, d in enumerate(out_sizes) if d != 1]
    result: list[Optional[str]] = [SINGLETON] * len(out_sizes)
    if not wide:
        return result
    if len(wide) == 1:
        whole = {role.rstrip("*") if role else None for role in roles}
        if len(roles) == 1:
            result[wide[0]] = roles[0]
        elif len(whole) == 1 and None not in whole and all(r.endswith("*") for r in roles):
            result[wide[0]] = whole.pop()     # the parts of one axis, merged back (any order)
        else:
            result[wide[0]] = None
        return result
    role = roles[0] if len(roles) == 1 and roles[0] and roles[0] != BATCH else None
    for k in wide:
        result[k] = part_of(role.rstrip("*")) if role else None
    return result
