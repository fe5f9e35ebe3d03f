"""Small transforms, one family per module. See ``docs/transforms.md``."""

from .apply import apply_updates, stochastic_round_, stochastic_round_apply
from .moments import beta_debias, scale_by_adam, scale_by_adopt, scale_by_laprop
from .scaling import add_decayed_weights, scale_by_learning_rate
from .schedules import palm_beta2

__all__ = [
    "add_decayed_weights",
    "apply_updates",
    "beta_debias",
    "palm_beta2",
    "scale_by_adam",
    "scale_by_adopt",
    "scale_by_laprop",
    "scale_by_learning_rate",
    "stochastic_round_",
    "stochastic_round_apply",
]
