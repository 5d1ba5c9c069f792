"""critcore: reward models trained with synthetic critiques."""
__version__ = "0.1.0"
