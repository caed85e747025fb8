"""`python -m reconciler` is the `hedgerow` command."""

from reconciler.cli import main

main()
