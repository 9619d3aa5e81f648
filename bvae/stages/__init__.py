"""One module per DVC stage: the work in importable functions, a thin ``main`` for the CLI."""
