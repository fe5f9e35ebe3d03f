"""Named optimizers: HeavyBall's class names and arguments, each a short chain."""

from .adam_family import ForeachADOPT, ForeachAdamW, ForeachLaProp

__all__ = ["ForeachADOPT", "ForeachAdamW", "ForeachLaProp"]
