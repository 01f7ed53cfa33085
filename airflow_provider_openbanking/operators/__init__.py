"""See the ``openbanking`` module of this package."""
