"""The `hedgerow` command: commands only parse arguments and print (one output helper)."""
