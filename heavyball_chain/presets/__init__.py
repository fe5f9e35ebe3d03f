"""Named optimizers: HeavyBall's class names and arguments, each a short chain."""

from .adam_family import ForeachADOPT, ForeachAdamW, ForeachLaProp
from .schedule_free import ForeachSFAdamW, PaLMForeachSFAdamW

__all__ = ["ForeachADOPT", "ForeachAdamW", "ForeachLaProp", "ForeachSFAdamW", "PaLMForeachSFAdamW"]
