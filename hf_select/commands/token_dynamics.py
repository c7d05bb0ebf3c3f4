"""``hf-select token-dynamics``: classify token-loss dynamics over checkpoints (RHO-1, arXiv 2404.07965, 2.1)."""

from __future__ import annotations

from ..slm.jobs import TokenDynamicsArguments, token_dynamics_job

CONFIG_CLASSES = (TokenDynamicsArguments,)


def run(args: TokenDynamicsArguments) -> int:
    print(token_dynamics_job(args))
    return 0
