"""Named optimizers, each a short chain, in two families (docs/presets.md):

* ``HEAVYBALL``: HeavyBall 0.8.1's class names, arguments and defaults (``ForeachAdamW``, ...).
* ``STANDARD``: drop-in replacements for the optimizers people use every day, with their
  reference's class name, signature, defaults and numbers: torch.optim 2.13's (``SGD``, ``Adam``,
  ... ``Muon``), ``Lion`` (lion-pytorch), ``AdamWScheduleFree`` (schedulefree), ``SOAP`` (the
  reference implementation), ``ADOPT`` (the paper's), ``AdEMAMix`` and ``MARS`` (their official
  code).

``MuonWithAdamW`` takes a model and routes its hidden matrices to Muon and the rest to AdamW.
``CAPTURABLE`` names the presets that take ``capturable=True`` (a step a CUDA graph can capture).
"""

from .adam_family import ForeachADOPT, ForeachAdamW, ForeachLaProp
from .ademamix import AdEMAMix
from .adopt import ADOPT
from .lion import Lion
from .mars import MARS
from .muon_adamw import MuonWithAdamW
from .schedule_free import AdamWScheduleFree, ForeachSFAdamW, PaLMForeachSFAdamW
from .soap import (
    SOAP,
    ForeachSOAP,
    PaLMForeachSOAP,
    PalmForEachSoap,
    PrecondScheduleForeachSOAP,
    PrecondSchedulePaLMForeachSOAP,
    PrecondScheduleSFPaLMForeachSOAP,
    PrecondScheduleSFPaLMSOAP,
    SFPaLMForeachSOAP,
)
from .torch_adam import Adam, Adamax, AdamW, NAdam, RAdam
from .torch_classic import SGD, Adagrad, RMSprop
from .torch_matrix import Adafactor, Muon

HEAVYBALL = [
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
STANDARD = [
    "SGD", "Adam", "AdamW", "NAdam", "RAdam", "Adamax", "RMSprop", "Adagrad", "Adafactor", "Muon",
    "Lion", "AdamWScheduleFree", "SOAP", "ADOPT", "AdEMAMix", "MARS",
]
CAPTURABLE = [
    "ForeachADOPT", "ForeachAdamW", "ForeachLaProp", "ForeachSFAdamW", "PaLMForeachSFAdamW",
    "Adam", "AdamW", "ADOPT", "AdamWScheduleFree",
]
# The named optimizers and the helper: HEAVYBALL, STANDARD and MuonWithAdamW, spelled out so that
# static tools (pyflakes, mypy) see the exports (tests/test_docstrings.py checks they agree). HeavyBall
# 0.8.1's other spellings, PalmForEachSoap and PrecondScheduleSFPaLMSOAP, are the same classes
# (imported above for ``heavyball_chain.PalmForEachSoap``), not listed.
__all__ = [
    "ForeachADOPT", "ForeachAdamW", "ForeachLaProp", "ForeachSFAdamW", "ForeachSOAP",
    "PaLMForeachSFAdamW", "PaLMForeachSOAP", "PrecondScheduleForeachSOAP",
    "PrecondSchedulePaLMForeachSOAP", "PrecondScheduleSFPaLMForeachSOAP", "SFPaLMForeachSOAP",
    "SGD", "Adam", "AdamW", "NAdam", "RAdam", "Adamax", "RMSprop", "Adagrad", "Adafactor", "Muon",
    "Lion", "AdamWScheduleFree", "SOAP", "ADOPT", "AdEMAMix", "MARS",
    "MuonWithAdamW",
]
