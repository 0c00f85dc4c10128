"""Errors a user can act on.

Every error exbp raises for bad input is an :class:`ExbpError` whose message is one line naming the
thing that was wrong and what would be accepted; the CLI prints that line and exits non-zero, a
service can catch the base class. Subclasses say which input was at fault.
"""


def first_line(exc: Exception) -> str:
    """An exception's message cut to its first line (or its type's name): what a one-line error
    quotes from a library."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ExbpError(ValueError):
    """Base class: bad input that the caller can correct."""


class ModelError(ExbpError):
    """The model file or ModelProto cannot be used (missing, corrupt, invalid, unsupported opset)."""


class UnsupportedOpError(ModelError):
    """An op (or an op's configuration) on the walk's path has no Excitation Backprop rule."""


class InputError(ExbpError):
    """The input array or image does not fit the model."""


class LayerError(ExbpError):
    """The requested map layer does not exist or cannot carry a map."""


class TargetError(ExbpError):
    """A requested target class does not exist."""


class MethodError(ExbpError):
    """An unknown method, or a method the model cannot support (c-MWP without a classifier layer)."""


class OutputError(ExbpError):
    """The output folder cannot be created or written, or holds another run."""
