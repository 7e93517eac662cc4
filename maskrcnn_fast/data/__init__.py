from .synthetic import SyntheticShapes

__all__ = ["SyntheticShapes"]
