"""``hf-select compare CONFIG.yaml``: a paired bake-off of data-selection arms at equal update tokens, with
effect sizes, 95% intervals and cost; ``hf-select compare --plan CONFIG.yaml`` sizes it first (docs/compare.md).
"""

from __future__ import annotations

from ..compare.config import StudyConfig, arms_help

CONFIG_CLASSES = (StudyConfig,)
HELP_EPILOG = "arm types (entries of 'arms', with their fields):\n" + arms_help()


def run(config: StudyConfig) -> int:
    from ..compare import plan_table, run_plan, run_study
    from ..compare.report import first_screen_table
    from ..compare.study import distributed_state

    config.arm_configs()  # a bad arm fails before any work
    if config.plan:
        plan = run_plan(config)
        if distributed_state().is_main_process:
            print(plan_table(plan))
        return 0
    results = run_study(config)
    if distributed_state().is_main_process:
        print(first_screen_table(results))
        print(f"report: {config.output_dir}/report.html, results: {config.output_dir}/results.json")
    return 0
