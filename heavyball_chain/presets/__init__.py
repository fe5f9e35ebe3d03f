"""Named optimizers: HeavyBall's class names and arguments, each a short chain."""

from .adam_family import ForeachADOPT, ForeachAdamW, ForeachLaProp
from .schedule_free import ForeachSFAdamW, PaLMForeachSFAdamW
from .soap import (
    ForeachSOAP,
    PaLMForeachSOAP,
    PalmForEachSoap,
    PrecondScheduleForeachSOAP,
    PrecondSchedulePaLMForeachSOAP,
    PrecondScheduleSFPaLMForeachSOAP,
    PrecondScheduleSFPaLMSOAP,
    SFPaLMForeachSOAP,
)

# The named optimizers (aliases excluded: PalmForEachSoap, PrecondScheduleSFPaLMSOAP).
__all__ = [
    "ForeachADOPT",
    "ForeachAdamW",
    "ForeachLaProp",
    "ForeachSFAdamW",
    "ForeachSOAP",
    "PaLMForeachSFAdamW",
    "PaLMForeachSOAP",
    "PrecondScheduleForeachSOAP",
    "PrecondSchedulePaLMForeachSOAP",
    "PrecondScheduleSFPaLMForeachSOAP",
    "SFPaLMForeachSOAP",
]
ALIASES = {"PalmForEachSoap": PaLMForeachSOAP, "PrecondScheduleSFPaLMSOAP": PrecondScheduleSFPaLMForeachSOAP}
