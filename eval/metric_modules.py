"""Where the project's ``evaluate`` metric modules live, so that ``evaluate.load`` finds them offline.

>>> import evaluate
>>> from hf_select.eval.metric_modules import metrics_path
>>> evaluate.load(metrics_path("rouge_l")).compute(predictions=["a b"], references=["a b"])
{'rouge_l': 1.0}
"""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent / "metrics"


def available_metrics() -> list[str]:
    """Names of the metric modules shipped with hf-select."""
    return sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())


def metrics_path(name: str) -> str:
    """Local path of metric module ``name`` for ``evaluate.load`` (no Hub access needed)."""
    path = METRICS_DIR / name
    if not (path / f"{name}.py").is_file():
        raise ValueError(f"no hf-select metric module {name!r}; available: {available_metrics()}")
    return str(path)


def load_metric(name: str, **kwargs):
    """``evaluate.load`` of the project's metric module ``name``."""
    import evaluate

    return evaluate.load(metrics_path(name), **kwargs)
