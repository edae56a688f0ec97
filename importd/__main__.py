"""``python -m importd``: the same as the ``importd`` command."""

from importd.cli import run_main

run_main()
