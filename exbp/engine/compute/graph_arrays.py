"""A graph-building array namespace: arrays whose operations write ONNX nodes.

The rules are written against an array namespace (``tensors.xp``); run against this one, they do
not compute a map but write the ONNX nodes that compute it, which is how ``exbp compile`` puts
Excitation Backprop into the model's own graph with the same rule definitions as the eager walk.
A :class:`SymbolicArray` knows its shape and dtype at build time — every axis but the batch's is
static, as the rules' shape arithmetic needs — and names the ONNX value that will hold it.

The batch size is :class:`Batch`, an unknown times a factor: it survives the rules' shape
arithmetic (a reshape that merges the target rows with the batch, a division of two shapes) and
becomes ``-1`` in a Reshape or the input's run-time size in an Expand.

Only what the rules, the walker and the map reduction use is here: NumPy's arithmetic,
comparisons, ``where``, ``maximum``/``minimum``, reductions, reshapes and transposes, basic slicing
(``a[i:j]``, ``a[..., None]``) and slice assignment (``a[i:j] += b``, written as a Pad and a
Where), ``matmul``, ``tensordot`` of a matrix, ``concatenate``/``split``/``stack``, ``zeros``/
``ones``/``full``/``broadcast_to``, ``arange``/``argmax`` — each written with nodes valid from
opset 9 on, in the form the model's opset asks for. A value has no truth value at build time:
a rule that branches on one raises TypeError here, rather than compiling one input's branch.
"""

from __future__ import annotations

import itertools
import types
from typing import Optional, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

# NumPy dtypes by the ONNX element types the namespace writes
_ELEMENT_TYPES = {np.dtype(np.float32): onnx.TensorProto.FLOAT, np.dtype(np.float16): onnx.TensorProto.FLOAT16,
                  np.dtype(np.int64): onnx.TensorProto.INT64, np.dtype(np.int32): onnx.TensorProto.INT32,
                  np.dtype(bool): onnx.TensorProto.BOOL, np.dtype(np.float64): onnx.TensorProto.DOUBLE}


def element_type(dtype) -> int:
    return _ELEMENT_TYPES[np.dtype(dtype)]


class Batch:
    """The batch size (unknown until run time) times ``factor``."""

    __slots__ = ("factor",)

    def __init__(self, factor: int = 1):
        self.factor = int(factor)

    def __mul__(self, other):
        if isinstance(other, Batch):
            raise TypeError("a shape holds the batch size at most once")
        return Batch(self.factor * int(other))

    __rmul__ = __mul__

    def __floordiv__(self, other):
        if isinstance(other, Batch):
            return self.factor // other.factor
        if self.factor % int(other):
            raise TypeError(f"{self!r} is not a multiple of {other}")
        return Batch(self.factor // int(other))

    def __eq__(self, other):
        return isinstance(other, Batch) and other.factor == self.factor

    def __hash__(self):
        return hash(("Batch", self.factor))

    def __index__(self):
        raise TypeError("the batch size is not known when the graph is built")

    def __repr__(self):
        return "N" if self.factor == 1 else f"{self.factor}N"


def _size(shape) -> tuple[int, int]:
    """(the product of the static dims and batch factors, how many batch dims)."""
    product, batches = 1, 0
    for dim in shape:
        if isinstance(dim, Batch):
            product, batches = product * dim.factor, batches + 1
        else:
            product *= int(dim)
    return product, batches


def broadcast_shapes(*shapes) -> tuple:
    rank = max(len(s) for s in shapes)
    result = []
    for dims in zip(*((1,) * (rank - len(s)) + tuple(s) for s in shapes)):
        chosen = 1
        for dim in dims:
            if isinstance(dim, Batch) or dim != 1:
                if chosen != 1 and chosen != dim:
                    raise ValueError(f"shapes {shapes} do not broadcast")
                chosen = dim
        result.append(chosen)
    return tuple(result)


class GraphBuilder:
    """The nodes and initializers one compilation writes, with unique names under ``prefix``.
    ``batch``: (the input's name, its batch axis) where the batch size is dynamic."""

    def __init__(self, opset: int, prefix: str = "exbp", batch: Optional[tuple[str, int]] = None):
        self.opset = opset
        self.prefix = prefix
        self.batch = batch
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = itertools.count()
        self._scalars: dict = {}
        self._batch_size: Optional[str] = None

    def name(self, hint: str) -> str:
        return f"{self.prefix}/{hint}_{next(self._count)}"

    def node(self, op_type: str, inputs: Sequence[str], outputs: int = 1, hint: str = "",
             names: Optional[Sequence[str]] = None, **attrs) -> list[str]:
        """Writes one node; its outputs are ``names``, or new names."""
        names = list(names) if names else [self.name(hint or op_type) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=self.name(op_type), **attrs))
        return names

    def initializer(self, value: np.ndarray, hint: str = "constant") -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def scalar(self, value, dtype) -> str:
        key = (float(value), np.dtype(dtype).str)
        if key not in self._scalars:
            self._scalars[key] = self.initializer(np.array(value, dtype=dtype), "scalar")
        return self._scalars[key]

    def ints(self, values) -> str:
        return self.initializer(np.asarray(values, dtype=np.int64), "ints")

    def batch_size(self) -> str:
        """The run-time batch size, an int64 tensor of shape (1,)."""
        if self.batch is None:
            raise TypeError("this graph's batch size is static")
        if self._batch_size is None:
            input_name, axis = self.batch
            (shape,) = self.node("Shape", [input_name], hint="input_shape")
            self._batch_size = self.slice(shape, [axis], [axis + 1], [0])
        return self._batch_size

    def shape_tensor(self, shape) -> str:
        """An int64 tensor holding ``shape``, the batch dims read at run time."""
        if not any(isinstance(dim, Batch) for dim in shape):
            return self.ints([int(d) for d in shape])
        pieces, static = [], []
        for dim in shape:
            if isinstance(dim, Batch):
                if static:
                    pieces.append(self.ints(static))
                    static = []
                size = self.batch_size()
                if dim.factor != 1:
                    (size,) = self.node("Mul", [size, self.ints([dim.factor])])
                pieces.append(size)
            else:
                static.append(int(dim))
        if static:
            pieces.append(self.ints(static))
        return self.node("Concat", pieces, axis=0, hint="shape")[0]

    # ---- nodes whose form changed between opsets --------------------------------------------

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: bool) -> str:
        since = {"ReduceSum": 13}.get(op_type, 18)    # when the axes became an input
        if self.opset >= since:
            return self.node(op_type, [x, self.ints(axes)], keepdims=int(keepdims))[0]
        return self.node(op_type, [x], axes=list(axes), keepdims=int(keepdims))[0]

    def slice(self, x: str, starts, ends, axes, steps=None) -> str:
        steps = list(steps) if steps is not None else [1] * len(starts)
        if self.opset >= 10:
            return self.node("Slice", [x, self.ints(starts), self.ints(ends), self.ints(axes), self.ints(steps)])[0]
        if any(step != 1 for step in steps):
            raise TypeError(f"a Slice with steps needs opset 10; the model uses opset {self.opset}")
        return self.node("Slice", [x], starts=list(starts), ends=list(ends), axes=list(axes))[0]

    def top_k(self, x: str, k: int) -> str:
        """The indices of the ``k`` largest values along the last axis, largest first."""
        if self.opset >= 10:
            attrs = {"largest": 1, "sorted": 1} if self.opset >= 11 else {}
            return self.node("TopK", [x, self.ints([k])], outputs=2, axis=-1, **attrs)[1]
        return self.node("TopK", [x], outputs=2, axis=-1, k=int(k))[1]

    def pad(self, x: str, pads: Sequence[int], value: float = 0.0) -> str:
        """``x`` padded with ``value`` (float32), ``pads`` as ONNX's (begins..., ends...)."""
        if self.opset >= 11:
            fill = [self.scalar(value, np.float32)] if value else []
            return self.node("Pad", [x, self.ints(pads), *fill])[0]
        return self.node("Pad", [x], pads=list(pads), value=float(value))[0]


class SymbolicArray:
    """One ONNX value, with its build-time shape and dtype. Operations return new arrays; slice
    assignment rebinds this one to the value the assignment writes (NumPy's in-place semantics,
    without views: the rules never write through a view)."""

    __array_ufunc__ = None          # NumPy operands defer to the methods below

    def __init__(self, builder: GraphBuilder, name: str, shape, dtype, zero: bool = False):
        self.builder, self.name = builder, name
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.zero = zero                # all zeros: written only if something reads it
        self.flags = types.SimpleNamespace(writeable=False)
        self.transposed_of: Optional[SymbolicArray] = None   # a matrix's transpose: its matrix

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def T(self) -> "SymbolicArray":
        return self.transpose(tuple(reversed(range(self.ndim))))

    def __repr__(self):
        return f"SymbolicArray({self.name!r}, shape={self.shape}, dtype={self.dtype})"

    def __bool__(self):
        raise TypeError("a value of the compiled graph has no truth value when it is built")

    def __len__(self):
        return self.shape[0]

    def __iter__(self):
        return (self[i] for i in range(self.shape[0]))

    def _new(self, name, shape, dtype=None) -> "SymbolicArray":
        return SymbolicArray(self.builder, name, shape, self.dtype if dtype is None else dtype)

    # ---- element-wise ---------------------------------------------------------------------

    def _operand(self, other) -> "SymbolicArray":
        return other if isinstance(other, SymbolicArray) else constant(self.builder, other, self.dtype)

    def _binary(self, op_type: str, other, reverse: bool = False, dtype=None) -> "SymbolicArray":
        other = self._operand(other)
        left, right = (other, self) if reverse else (self, other)
        left, right = _promoted(left, right)
        shape = broadcast_shapes(left.shape, right.shape)
        (name,) = self.builder.node(op_type, [left.name, right.name])
        return SymbolicArray(self.builder, name, shape, dtype or left.dtype)

    def __add__(self, other):
        if self.zero and isinstance(other, SymbolicArray) and broadcast_shapes(self.shape, other.shape) == other.shape:
            return other
        return self._binary("Add", other)

    def __radd__(self, other):
        if isinstance(other, (int, float)) and other == 0:   # Python's sum() starts at 0
            return self
        return self._binary("Add", other, reverse=True)

    def __sub__(self, other):
        return self._binary("Sub", other)

    def __rsub__(self, other):
        return self._binary("Sub", other, reverse=True)

    def __mul__(self, other):
        return self._binary("Mul", other)

    def __rmul__(self, other):
        return self._binary("Mul", other, reverse=True)

    def __truediv__(self, other):
        return self._binary("Div", other)

    def __rtruediv__(self, other):
        return self._binary("Div", other, reverse=True)

    def __pow__(self, exponent):
        if exponent == 2:
            return self * self
        return self._binary("Pow", exponent)

    def __neg__(self):
        return self._unary("Neg")

    def __abs__(self):
        return self._unary("Abs")

    def __lt__(self, other):
        return self._binary("Less", other, dtype=bool)

    def __gt__(self, other):
        return self._binary("Greater", other, dtype=bool)

    def __le__(self, other):
        return self._binary("LessOrEqual", other, dtype=bool) if self.builder.opset >= 12 else ~(self > other)

    def __ge__(self, other):
        return self._binary("GreaterOrEqual", other, dtype=bool) if self.builder.opset >= 12 else ~(self < other)

    def __eq__(self, other):
        return self._binary("Equal", other, dtype=bool)

    def __and__(self, other):
        return self._binary("And", other, dtype=bool)

    def __invert__(self):
        return self._unary("Not")

    __hash__ = object.__hash__

    def _unary(self, op_type: str, **attrs) -> "SymbolicArray":
        (name,) = self.builder.node(op_type, [self.name], **attrs)
        return self._new(name, self.shape)

    def astype(self, dtype, copy: bool = True) -> "SymbolicArray":
        if np.dtype(dtype) == self.dtype:
            return self
        (name,) = self.builder.node("Cast", [self.name], to=element_type(dtype))
        return self._new(name, self.shape, dtype)

    # ---- shapes ---------------------------------------------------------------------------

    def reshape(self, *shape) -> "SymbolicArray":
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        shape = _resolved_shape(self.shape, shape)
        if shape == self.shape:
            return self
        if self.zero:
            return zeros(self.builder, shape, self.dtype)
        onnx_shape = [-1 if isinstance(d, Batch) else int(d) for d in shape]
        (name,) = self.builder.node("Reshape", [self.name, self.builder.ints(onnx_shape)])
        return self._new(name, shape)

    def transpose(self, *axes) -> "SymbolicArray":
        axes = tuple(axes[0]) if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        axes = tuple(int(a) % self.ndim for a in axes) if axes else tuple(reversed(range(self.ndim)))
        if axes == tuple(range(self.ndim)):
            return self
        if self.transposed_of is not None and axes == (1, 0):
            return self.transposed_of
        shape = tuple(self.shape[a] for a in axes)
        if self.zero:
            return zeros(self.builder, shape, self.dtype)
        (name,) = self.builder.node("Transpose", [self.name], perm=list(axes))
        transposed = self._new(name, shape)
        if axes == (1, 0):
            transposed.transposed_of = self
        return transposed

    def _reduced(self, op_type: str, axis, keepdims: bool) -> "SymbolicArray":
        axes = tuple(range(self.ndim)) if axis is None else (
            (axis,) if isinstance(axis, int) else tuple(axis))
        axes = tuple(sorted(a % self.ndim for a in axes))
        shape = tuple(1 if i in axes else d for i, d in enumerate(self.shape)) if keepdims else \
            tuple(d for i, d in enumerate(self.shape) if i not in axes)
        if not axes:
            return self
        return self._new(self.builder.reduce(op_type, self.name, axes, keepdims), shape)

    def sum(self, axis=None, keepdims: bool = False) -> "SymbolicArray":
        return self._reduced("ReduceSum", axis, keepdims)

    def max(self, axis=None, keepdims: bool = False) -> "SymbolicArray":
        return self._reduced("ReduceMax", axis, keepdims)

    # ---- slicing --------------------------------------------------------------------------

    def _index(self, index) -> tuple[list, list, list]:
        """(a slice per axis, the output positions where ``None`` inserts an axis, the axes an
        integer index drops)."""
        index = index if isinstance(index, tuple) else (index,)
        given = sum(1 for item in index if isinstance(item, (slice, int)))
        slices, inserted, dropped, position = [], [], [], 0
        for item in index:
            if item is Ellipsis:
                fill = self.ndim - given
                slices.extend([slice(None)] * fill)
                position += fill
            elif item is None:
                inserted.append(position)
                position += 1
            elif isinstance(item, slice):
                slices.append(item)
                position += 1
            elif isinstance(item, int):
                item = item % self.shape[len(slices)]
                dropped.append(len(slices))
                slices.append(slice(item, item + 1))
            else:
                raise TypeError(f"the graph namespace indexes with slices and integers, not {item!r}")
        slices.extend([slice(None)] * (self.ndim - len(slices)))
        return slices, inserted, dropped

    def __getitem__(self, index) -> "SymbolicArray":
        slices, inserted, dropped = self._index(index)
        result, starts, ends, axes, steps, shape = self, [], [], [], [], []
        for axis, (item, dim) in enumerate(zip(slices, self.shape)):
            if item == slice(None):
                shape.append(dim)
                continue
            if isinstance(dim, Batch):
                raise TypeError("the graph namespace does not slice the batch axis")
            start, stop, step = item.indices(dim)
            starts.append(start)
            ends.append(stop if stop >= 0 else -dim - 1)
            axes.append(axis)
            steps.append(step)
            shape.append(len(range(start, stop, step)))
        if axes:
            if self.zero:
                result = zeros(self.builder, shape, self.dtype)
            else:
                result = self._new(self.builder.slice(self.name, starts, ends, axes, steps), shape)
        if inserted or dropped:
            shape = [d for axis, d in enumerate(result.shape) if axis not in dropped]
            for position in inserted:
                shape.insert(position, 1)
            result = result.reshape(tuple(shape))
        return result

    def __setitem__(self, index, value) -> None:
        """``self[index] = value`` for slices: the value spread to the slice's positions (zeros
        between them for a step beyond 1) and padded to this shape, chosen where the slice lies
        (where this array is all zeros, the padded value alone)."""
        slices, inserted, dropped = self._index(index)
        if inserted or dropped:
            raise TypeError("slice assignment takes slices only")
        region = [len(range(*item.indices(dim))) if item != slice(None) else dim
                  for item, dim in zip(slices, self.shape)]
        value = value if isinstance(value, SymbolicArray) else constant(self.builder, value, self.dtype)
        value = broadcast_to(value, tuple(region)).astype(self.dtype)
        pads_before, pads_after = [0] * self.ndim, [0] * self.ndim
        for axis, (item, dim) in enumerate(zip(slices, self.shape)):
            if item == slice(None):
                continue
            positions = range(*item.indices(dim))
            if not positions:
                return
            if positions.step < 0:
                value = value[(slice(None),) * axis + (slice(None, None, -1),)]
            if abs(positions.step) > 1:
                value = spread(value, axis, abs(positions.step))
            pads_before[axis] = min(positions)
            pads_after[axis] = dim - max(positions) - 1
        b = self.builder
        written = value
        if any(pads_before + pads_after):
            written = self._new(b.pad(value.name, pads_before + pads_after), self.shape)
        if not self.zero:
            mask = np.zeros([1 if item == slice(None) else dim for item, dim in zip(slices, self.shape)], bool)
            mask[tuple(slice(None) if item == slice(None) else item for item in slices)] = True
            (name,) = b.node("Where", [b.initializer(mask, "mask"), written.name, self.name])
            written = self._new(name, self.shape)
        self.name, self.zero = written.name, False


def spread(value: SymbolicArray, axis: int, step: int) -> SymbolicArray:
    """``value`` with ``step − 1`` zeros between its positions along ``axis``."""
    shape = value.shape
    count = shape[axis]
    expanded = value.reshape(shape[:axis + 1] + (1,) + shape[axis + 1:])
    pads = [0] * (len(shape) + 1) * 2
    pads[len(shape) + 1 + axis + 1] = step - 1
    b = value.builder
    padded = value._new(b.pad(expanded.name, pads), shape[:axis + 1] + (step,) + shape[axis + 1:])
    flat = padded.reshape(shape[:axis] + (count * step,) + shape[axis + 1:])
    return flat[(slice(None),) * axis + (slice(0, (count - 1) * step + 1),)]


def _resolved_shape(current, shape) -> tuple:
    """``shape`` with its -1 resolved against ``current``'s size."""
    shape = tuple(shape)
    if -1 not in shape:
        return shape
    total, total_batches = _size(current)
    known, known_batches = _size(tuple(d for d in shape if not (isinstance(d, int) and d == -1)))
    missing = total // known
    resolved = Batch(missing) if total_batches > known_batches else missing
    return tuple(resolved if (isinstance(d, int) and d == -1) else d for d in shape)


def _promoted(left: SymbolicArray, right: SymbolicArray):
    """Both operands in one dtype: booleans and integers become the other's float type."""
    if left.dtype == right.dtype:
        return left, right
    if left.dtype.kind == "f" and right.dtype.kind != "f":
        return left, right.astype(left.dtype)
    if right.dtype.kind == "f" and left.dtype.kind != "f":
        return left.astype(right.dtype), right
    return left, right.astype(left.dtype)


def constant(builder: GraphBuilder, value, dtype=None) -> SymbolicArray:
    """A constant: a scalar (shared) or an array (an initializer)."""
    array = np.asarray(value)
    if dtype is not None and array.dtype.kind in "fbiu" and np.dtype(dtype).kind == "f":
        array = array.astype(dtype)
    if array.ndim == 0:
        return SymbolicArray(builder, builder.scalar(array.item(), array.dtype), (), array.dtype)
    return SymbolicArray(builder, builder.initializer(array), array.shape, array.dtype)


def zeros(builder: GraphBuilder, shape, dtype=np.float32) -> SymbolicArray:
    return full(builder, shape, 0, dtype, zero=True)


def full(builder: GraphBuilder, shape, value, dtype=np.float32, zero: bool = False) -> SymbolicArray:
    shape = tuple(shape)
    (name,) = builder.node("Expand", [builder.scalar(value, dtype), builder.shape_tensor(shape)])
    return SymbolicArray(builder, name, shape, dtype, zero=zero)


def broadcast_to(array: SymbolicArray, shape) -> SymbolicArray:
    shape = tuple(shape)
    if array.shape == shape:
        return array
    if array.zero:
        return zeros(array.builder, shape, array.dtype)
    b = array.builder
    (name,) = b.node("Expand", [array.name, b.shape_tensor(shape)])
    return array._new(name, broadcast_shapes(array.shape, shape))


class GraphNamespace:
    """The array namespace (``xp``) of the graph backend."""

    float32, float16, int32, int64, bool_ = np.float32, np.float16, np.int32, np.int64, np.bool_
    inf = np.inf

    def __init__(self, builder: GraphBuilder):
        self.builder = builder

    def _array(self, value, like: Optional[SymbolicArray] = None) -> SymbolicArray:
        if isinstance(value, SymbolicArray):
            return value
        return constant(self.builder, value, like.dtype if like is not None else None)

    def asarray(self, value, dtype=None) -> SymbolicArray:
        if isinstance(value, SymbolicArray):
            return value if dtype is None else value.astype(dtype)
        return constant(self.builder, np.asarray(value, dtype=dtype))

    def zeros(self, shape, dtype=np.float32):
        return zeros(self.builder, shape if isinstance(shape, tuple) else (shape,), dtype)

    def ones(self, shape, dtype=np.float32):
        return full(self.builder, shape if isinstance(shape, tuple) else (shape,), 1, dtype)

    def full(self, shape, value, dtype=np.float32):
        return full(self.builder, shape if isinstance(shape, tuple) else (shape,), value, dtype)

    def broadcast_to(self, array, shape):
        return broadcast_to(self._array(array), shape)

    def arange(self, n: int):
        return constant(self.builder, np.arange(int(n), dtype=np.int64))

    def maximum(self, a, b):
        return _variadic(self, "Max", a, b)

    def minimum(self, a, b):
        return _variadic(self, "Min", a, b)

    def where(self, condition, a, b):
        """Where; choosing between an array and 0, a product with the condition as a float,
        which onnxruntime runs faster."""
        like = next((v for v in (a, b) if isinstance(v, SymbolicArray)), None)
        for chosen, other, keep in ((a, b, True), (b, a, False)):
            if (isinstance(chosen, SymbolicArray) and chosen.dtype.kind == "f"
                    and not isinstance(other, SymbolicArray) and np.ndim(other) == 0 and other == 0):
                mask = self._array(condition) if keep else ~self._array(condition)
                return chosen * mask.astype(chosen.dtype)
        a, b = self._array(a, like), self._array(b, like)
        a, b = _promoted(a, b)
        condition = self._array(condition)
        shape = broadcast_shapes(condition.shape, a.shape, b.shape)
        (name,) = self.builder.node("Where", [condition.name, a.name, b.name])
        return SymbolicArray(self.builder, name, shape, a.dtype)

    def abs(self, a):
        return abs(a)

    def exp(self, a):
        return a._unary("Exp")

    def sqrt(self, a):
        return a._unary("Sqrt")

    def tanh(self, a):
        return a._unary("Tanh")

    def matmul(self, a, b):
        """MatMul; by a matrix's transpose, a Gemm with transB, so that no transposed copy of
        the matrix is made (onnxruntime would fold one into a second constant). onnxruntime
        still packs the matrix once per node that reads it as a constant second operand — the Z
        pass and the transpose pass over a classifier's W⁺ each hold a packed copy (VGG16's
        first classifier layer: 411 MB each)."""
        a, b = self._array(a), self._array(b)
        if b.transposed_of is not None and a.ndim >= 2:
            rows = a.reshape((-1, a.shape[-1]))
            bias = [] if self.builder.opset >= 11 else [self.builder.scalar(0, a.dtype)]  # C optional from 11
            (name,) = self.builder.node("Gemm", [rows.name, b.transposed_of.name, *bias], transB=1)
            product = SymbolicArray(self.builder, name, (rows.shape[0], b.shape[1]), a.dtype)
            return product.reshape(a.shape[:-1] + (b.shape[1],))
        shape = broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
        (name,) = self.builder.node("MatMul", [a.name, b.name])
        return SymbolicArray(self.builder, name, shape, a.dtype)

    def transpose(self, a, axes=None):
        return a.transpose(axes) if axes is not None else a.transpose()

    def swapaxes(self, a, first: int, second: int):
        axes = list(range(a.ndim))
        axes[first], axes[second] = axes[second], axes[first]
        return a.transpose(tuple(axes))

    def moveaxis(self, a, source: int, destination: int):
        axes = list(range(a.ndim))
        moved = axes.pop(source % a.ndim)
        axes.insert(destination % a.ndim, moved)
        return a.transpose(tuple(axes))

    def tensordot(self, matrix, a, axes):
        """``tensordot(matrix, a, axes=([1], [axis]))`` for a 2-D ``matrix``: the matrix applied
        along ``axis``, the result's first axis being the matrix's rows."""
        (first,), (axis,) = axes
        if first != 1 or matrix.ndim != 2:
            raise TypeError("the graph namespace's tensordot applies a matrix along one axis")
        last = self.moveaxis(a, axis, -1)
        return self.moveaxis(self.matmul(last, self._array(matrix).T), -1, 0)

    def concatenate(self, arrays, axis: int = 0):
        arrays = [self._array(a) for a in arrays]
        if len(arrays) == 1:
            return arrays[0]
        axis = axis % arrays[0].ndim
        length = sum(a.shape[axis] for a in arrays)
        shape = arrays[0].shape[:axis] + (length,) + arrays[0].shape[axis + 1:]
        (name,) = self.builder.node("Concat", [a.name for a in arrays], axis=axis)
        return SymbolicArray(self.builder, name, shape, arrays[0].dtype)

    def stack(self, arrays, axis: int = 0):
        arrays = [self._array(a) for a in arrays]
        expanded = [a.reshape(a.shape[:axis] + (1,) + a.shape[axis:]) for a in arrays]
        return self.concatenate(expanded, axis=axis)

    def split(self, a, edges, axis: int = 0):
        axis = axis % a.ndim
        bounds = [0, *[int(e) for e in edges], a.shape[axis]]
        return [a[(slice(None),) * axis + (slice(start, end),)] for start, end in zip(bounds, bounds[1:])]

    def sum(self, a, axis=None, keepdims=False):
        return a.sum(axis=axis, keepdims=keepdims)

    def bincount(self, x, weights, minlength):
        """Σ of ``weights`` at each index of the 1-D ``x``: a ScatterElements adding onto zeros
        (opset 16)."""
        data = zeros(self.builder, (minlength,), weights.dtype)
        (name,) = self.builder.node("ScatterElements", [data.name, x.name, weights.name], axis=0,
                                    reduction="add")
        return SymbolicArray(self.builder, name, (minlength,), weights.dtype)

    def argmax(self, a, axis: int = -1):
        axis = axis % a.ndim
        attrs = {"select_last_index": 0} if self.builder.opset >= 12 else {}
        (name,) = self.builder.node("ArgMax", [a.name], axis=axis, keepdims=0, **attrs)
        return SymbolicArray(self.builder, name, a.shape[:axis] + a.shape[axis + 1:], np.int64)


def _variadic(xp: GraphNamespace, op_type: str, a, b) -> SymbolicArray:
    like = a if isinstance(a, SymbolicArray) else b
    a, b = xp._array(a, like), xp._array(b, like)
    a, b = _promoted(a, b)
    (name,) = xp.builder.node(op_type, [a.name, b.name])
    return SymbolicArray(xp.builder, name, broadcast_shapes(a.shape, b.shape), a.dtype)
