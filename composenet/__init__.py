"""composenet: build the networks of Compose files directly in the Linux kernel."""

__version__ = "0.1.0"
