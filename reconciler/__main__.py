"""`python -m reconciler` is the `hedgerow` command."""

from reconciler.cli.main import main

main()
