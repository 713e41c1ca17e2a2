"""The ``kgweave`` command line."""
