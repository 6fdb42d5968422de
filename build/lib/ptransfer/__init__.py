"""ptransfer: how transfer learning from protein language models really works."""

__version__ = "0.1.0"
