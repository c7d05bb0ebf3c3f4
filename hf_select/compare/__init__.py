"""``hf_select.compare``: a paired bake-off of data-selection methods at equal update tokens, with effect
sizes, confidence intervals and cost (``hf-select compare``).

The core never imports a method; this package may: each built-in arm (:mod:`hf_select.compare.arms`) wraps one
mechanism's Trainer. Users add arms with :func:`register_arm`.
"""

from .arms import ArmSetup
from .config import ARMS, ArmConfig, StudyConfig, arm_types, parse_arm, register_arm
from .plan import plan_table, run_plan
from .runner import run_one, run_study
from .stats import detectable_effect, paired_comparison, seeds_needed, t_quantile

__all__ = [
    "ARMS", "ArmConfig", "ArmSetup", "StudyConfig", "arm_types", "detectable_effect", "paired_comparison",
    "parse_arm", "plan_table", "register_arm", "run_one", "run_plan", "run_study", "seeds_needed", "t_quantile",
]  # fmt: skip
