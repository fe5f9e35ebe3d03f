"""Small transforms, one family per module. See ``docs/transforms.md``."""

from .accumulators import scale_by_adagrad, scale_by_inverse_time_decay, scale_by_rmsprop
from .adafactor import clip_by_block_rms, scale_by_factored_rms, scale_by_relative_step
from .adam_variants import scale_by_adamax, scale_by_nadam, scale_by_radam
from .adaptive_clipping import clip_by_adaptive_norm
from .ademamix import scale_by_ademamix
from .apply import StochasticWriter, apply_updates, stochastic_round_, stochastic_round_apply
from .ema import ema_params, ema_weights
from .gradient import add_noise, cautious, clip_by_global_norm, clip_by_value, scale_by_sign, trace
from .lion import scale_by_lion
from .mars import mars_correction
from .moments import beta_debias, scale_by_adam, scale_by_adopt, scale_by_laprop, scale_by_rms
from .muon import decayed_apply, ema_momentum, muon_lr_ratio, newton_schulz, orthogonalize_via_newton_schulz, torch_adam_step
from .scaling import add_decayed_weights, decay_after_update, scale_by_learning_rate
from .schedule_free import schedule_free
from .schedules import every, palm_beta2, precond_schedule, step_power
from .soap import soap_precondition
from .wrappers import apply_if_finite, identity, masked, multi_steps, partition, renamed, scale

__all__ = [
    "StochasticWriter",
    "add_decayed_weights",
    "add_noise",
    "apply_if_finite",
    "apply_updates",
    "beta_debias",
    "cautious",
    "clip_by_adaptive_norm",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "clip_by_value",
    "decay_after_update",
    "decayed_apply",
    "ema_momentum",
    "ema_params",
    "ema_weights",
    "every",
    "identity",
    "mars_correction",
    "masked",
    "multi_steps",
    "muon_lr_ratio",
    "newton_schulz",
    "orthogonalize_via_newton_schulz",
    "partition",
    "palm_beta2",
    "precond_schedule",
    "renamed",
    "scale",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_ademamix",
    "scale_by_adopt",
    "scale_by_factored_rms",
    "scale_by_inverse_time_decay",
    "scale_by_laprop",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_nadam",
    "scale_by_radam",
    "scale_by_relative_step",
    "scale_by_rms",
    "scale_by_rmsprop",
    "scale_by_sign",
    "schedule_free",
    "soap_precondition",
    "stochastic_round_",
    "step_power",
    "stochastic_round_apply",
    "torch_adam_step",
    "trace",
]
