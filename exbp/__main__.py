"""``python -m exbp``: the ``exbp`` command."""

from .cli.main import cli

cli(prog_name="exbp")
