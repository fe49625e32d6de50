"""The ``loop`` command line: a thin edge over the services."""
