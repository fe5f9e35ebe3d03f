"""Small transforms, one family per module. See ``docs/transforms.md``."""

from .adaptive_clipping import clip_by_adaptive_norm
from .apply import StochasticWriter, apply_updates, stochastic_round_, stochastic_round_apply
from .ema import ema_params, ema_weights
from .gradient import add_noise, cautious, clip_by_global_norm, clip_by_value, scale_by_sign, trace
from .moments import beta_debias, scale_by_adam, scale_by_adopt, scale_by_laprop, scale_by_rms
from .scaling import add_decayed_weights, scale_by_learning_rate
from .schedule_free import schedule_free
from .schedules import palm_beta2, step_power
from .soap import every, precond_schedule, soap_precondition
from .wrappers import apply_if_finite, identity, masked, multi_steps, partition, scale

__all__ = [
    "StochasticWriter",
    "add_decayed_weights",
    "add_noise",
    "apply_if_finite",
    "apply_updates",
    "beta_debias",
    "cautious",
    "clip_by_adaptive_norm",
    "clip_by_global_norm",
    "clip_by_value",
    "ema_params",
    "ema_weights",
    "every",
    "identity",
    "masked",
    "multi_steps",
    "partition",
    "palm_beta2",
    "precond_schedule",
    "scale",
    "scale_by_adam",
    "scale_by_adopt",
    "scale_by_laprop",
    "scale_by_learning_rate",
    "scale_by_rms",
    "scale_by_sign",
    "schedule_free",
    "soap_precondition",
    "stochastic_round_",
    "step_power",
    "stochastic_round_apply",
    "trace",
]
