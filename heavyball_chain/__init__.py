"""Optax-style composable gradient transformations for PyTorch, and HeavyBall's optimizers built from them."""

from . import presets, transforms
from .core import Bucket, Hyper, Schedule, Transform, chain, named_chain
from .optimizer import ChainOptimizer
from .presets import *  # noqa: F403 - the named optimizers
from .presets import PalmForEachSoap, PrecondScheduleSFPaLMSOAP

__version__ = "0.1.0"

__all__ = [
    "Bucket",
    "ChainOptimizer",
    "Hyper",
    "PalmForEachSoap",
    "PrecondScheduleSFPaLMSOAP",
    "Schedule",
    "Transform",
    "chain",
    "named_chain",
    "presets",
    "transforms",
    *presets.__all__,
]
