"""FLAME: factuality-aware alignment (Lin et al., NeurIPS 2024) as a reproducible workflow."""

__version__ = "0.1.0"
