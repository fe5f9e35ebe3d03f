"""Small transforms, one family per module. See ``docs/transforms.md``."""

from .adaptive_clipping import clip_by_adaptive_norm
from .apply import StochasticWriter, apply_updates, stochastic_round_, stochastic_round_apply
from .moments import beta_debias, scale_by_adam, scale_by_adopt, scale_by_laprop, scale_by_rms
from .scaling import add_decayed_weights, scale_by_learning_rate
from .schedule_free import schedule_free
from .schedules import palm_beta2
from .soap import every, precond_schedule, soap_precondition

__all__ = [
    "StochasticWriter",
    "add_decayed_weights",
    "apply_updates",
    "beta_debias",
    "clip_by_adaptive_norm",
    "every",
    "palm_beta2",
    "precond_schedule",
    "scale_by_adam",
    "scale_by_adopt",
    "scale_by_laprop",
    "scale_by_learning_rate",
    "scale_by_rms",
    "schedule_free",
    "soap_precondition",
    "stochastic_round_",
    "stochastic_round_apply",
]
