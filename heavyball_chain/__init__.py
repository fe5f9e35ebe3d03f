"""Optax-style composable gradient transformations for PyTorch, and HeavyBall's optimizers built from them."""

from . import transforms
from .core import Bucket, Hyper, Schedule, Transform, chain, named_chain
from .optimizer import ChainOptimizer
from .presets import ForeachADOPT, ForeachAdamW, ForeachLaProp, ForeachSFAdamW, PaLMForeachSFAdamW

__version__ = "0.1.0"

__all__ = [
    "Bucket",
    "ChainOptimizer",
    "ForeachADOPT",
    "ForeachAdamW",
    "ForeachLaProp",
    "ForeachSFAdamW",
    "Hyper",
    "PaLMForeachSFAdamW",
    "Schedule",
    "Transform",
    "chain",
    "named_chain",
    "transforms",
]
