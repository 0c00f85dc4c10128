"""The ``exbp`` command."""

import click

from .. import __version__


@click.group()
@click.version_option(__version__, prog_name="exbp")
def cli():
    """Excitation Backprop attention maps for ONNX CNNs."""
