"""labkit: deploy large language models efficiently."""
__version__ = "0.1.0"
