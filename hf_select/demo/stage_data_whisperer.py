"""Demo stage: the Data Whisperer experiment (:func:`hf_select.data_whisperer.experiment.run_experiment`,
arXiv 2505.12212) on the fine-tuning pool of the demo world, with SmolLM2-135M-Instruct (its chat template wraps
the prompt): random 10% subsets over 3 seeds, the top 10% and 30%, the full sample; AUROC of score vs tier and
STR. Tiers: ``high`` (Python FAQ, perlfaq) > ``medium`` (FOLDOC, Jargon, docstrings) > ``low`` (WordNet, GCIDE).
"""

from __future__ import annotations

import html
import json

import numpy as np
from transformers.utils import logging

from ..data_whisperer.experiment import QUICK, ExperimentSettings, run_experiment, tier_ranks
from .context import DemoContext

logger = logging.get_logger(__name__)

TITLE = "Data Whisperer: training-free selection of fine-tuning data"


def run(ctx: DemoContext) -> dict:
    from datasets import load_from_disk

    from .stage_pretrained_model import load_pretrained

    settings = QUICK if ctx.quick else ExperimentSettings()
    settings.seed = ctx.seed
    data = load_from_disk(str(ctx.world_dir / "finetune"))
    tokenizer = load_pretrained(ctx)[1]

    def pretrained():
        return load_pretrained(ctx)[0]

    out_dir = ctx.stage_dir("data_whisperer")
    result = run_experiment(pretrained, tokenizer, data["train"], data["heldout"], settings, out_dir)
    (out_dir / "scores.json").write_text(json.dumps({"scores": result["scores"], "tiers": result["tiers"]}))
    logger.warning(
        f"[data whisperer] AUROC(score vs tier) = {result['auroc_score_vs_tier']:.3f}\n{result['table']}"
    )
    result.pop("scores")
    result.pop("tiers")
    return result


def _plot(ctx: DemoContext) -> str:
    path = ctx.output_dir / "stages" / "data_whisperer" / "scores.json"
    if not path.exists():
        return ""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(path.read_text())
    tiers = np.array(data["tiers"])
    scores = np.array([np.nan if s is None else s for s in data["scores"]])
    fig, ax = plt.subplots(figsize=(6, 3))
    labels = sorted(set(tiers), key=lambda t: -tier_ranks([t])[0])
    ax.boxplot([scores[(tiers == t) & np.isfinite(scores)] for t in labels])
    ax.set_xticks(range(1, len(labels) + 1), labels)
    ax.set_ylabel("Data Whisperer score")
    ax.set_title("score by tier")
    from ..figures import img_html

    return img_html(fig, alt="Data Whisperer score by tier")


def report_html(ctx: DemoContext, result: dict) -> str:
    def shown(x, fmt="{:.3f}"):
        return "not computed" if x is None or (isinstance(x, float) and np.isnan(x)) else fmt.format(x)

    rows = "".join(
        f"<tr><td>{html.escape(t)}</td><td>{v['n']}</td><td>{shown(v['mean_score'], '{:.4f}')}</td>"
        f"<td>{shown(v['share_of_top'], '{:.2f}')}</td></tr>"
        for t, v in result["per_tier"].items()
    )
    return (
        f"<p>Pool of {result['pool_size']} examples (stratified by tier); {result['scored_examples']} got a score "
        f"({result['dw_stats']}; selection valid: {result.get('selection_valid')}). AUROC of score vs tier: <b>{shown(result['auroc_score_vs_tier'])}</b> "
        f"(high vs low: {shown(result['auroc_high_vs_low'])}; 0.5 = chance).</p>"
        f"<table><tr><th>tier</th><th>n</th><th>mean score</th><th>share of top 10%</th></tr>{rows}</table>"
        f"<p>LoRA fine-tuning of SmolLM2 (selected top 10% vs random 10% (mean over seeds) vs top 30% vs the full "
        f"sample), held-out "
        f"metric and gold loss; STR = selection time / full fine-tuning time:</p>"
        f"<pre>{html.escape(result['table'])}</pre>{_plot(ctx)}"
    )
