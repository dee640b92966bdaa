"""oserve: serve LLMs faster by orchestrating heterogeneous deployments and switching them live."""

__version__ = "0.1.0"
