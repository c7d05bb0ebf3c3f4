"""Time the main job's SmolLM2 work on the students' pool with and without the shared pass, side by side in one
process, and check that the shared reference losses equal an independent reference pass on the real model.

Before: AttentionInfluence over the clean documents (its own encoding, 256-token chunks) + the SLM arm's reference
pass over every pool document. After: AttentionInfluence whose base pass also gives the reference losses
(:class:`hf_select.demo.shared_pass.ScoresWithReferenceLosses`, whole documents) + the reference pass over the
documents it does not score (the low-quality ones).

    python benchmarks/shared_reference_pass.py --cache_dir .hf_select_cache --heads_file HEADS.json [--every 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache_dir", default=".hf_select_cache")
    parser.add_argument("--heads_file", required=True)
    parser.add_argument("--output", default=None, help="Write the figures as JSON here.")
    parser.add_argument("--every", type=int, default=1, help="Time every N-th pool document only (a shorter run).")
    args = parser.parse_args()

    import numpy as np

    from hf_select.attention_influence.retrieval_heads import RetrievalHeads
    from hf_select.attention_influence.scorer import AttentionInfluence
    from hf_select.demo.context import DemoContext
    from hf_select.demo.shared_pass import ScoresWithReferenceLosses
    from hf_select.demo.stage_attention_influence import MAX_LENGTH
    from hf_select.demo.stage_pretrained_model import load_pretrained
    from hf_select.demo.students import load_tokenizer, pool_documents
    from hf_select.slm.cross_tokenizer import cross_tokenizer_reference_losses

    ctx = DemoContext(output_dir="/tmp/shared_reference_pass", cache_dir=args.cache_dir)
    heads = RetrievalHeads.load(args.heads_file).selected
    model, tokenizer = load_pretrained(ctx)
    student = load_tokenizer(ctx)
    pool = pool_documents(ctx)
    pool = pool.select(range(0, len(pool), args.every))
    clean = [t for t, q in zip(pool["text"], pool["quality"]) if q == "clean"]
    lowq = [t for t, q in zip(pool["text"], pool["quality"]) if q != "clean"]
    out = {"documents": {"clean": len(clean), "lowq": len(lowq)}, "load_before": os.getloadavg()}

    def timed(name, fn):
        start = time.perf_counter()
        value = fn()
        out[f"{name}_seconds"] = round(time.perf_counter() - start, 2)
        print(name, out[f"{name}_seconds"], "s", flush=True)
        return value

    old_scorer = AttentionInfluence(model, tokenizer, heads, max_length=256, batch_size=8)
    timed("before_ai", lambda: old_scorer({"text": clean}))
    reference = timed(
        "before_reference", lambda: cross_tokenizer_reference_losses(pool["text"], model, tokenizer, student, 8, 1024)
    )
    shared = ScoresWithReferenceLosses(
        AttentionInfluence(model, tokenizer, heads, max_length=MAX_LENGTH, batch_size=8, add_bos=True), student
    )
    scored = timed("after_shared_ai", lambda: shared({"text": clean}))
    timed("after_reference", lambda: cross_tokenizer_reference_losses(lowq, model, tokenizer, student, 8, 1024))
    out["before_seconds"] = round(out["before_ai_seconds"] + out["before_reference_seconds"], 2)
    out["after_seconds"] = round(out["after_shared_ai_seconds"] + out["after_reference_seconds"], 2)
    out["saved_seconds"] = round(out["before_seconds"] - out["after_seconds"], 2)
    # exactness on the real model: the shared values against the independent pass (clean documents)
    by_text = dict(zip(pool["text"], reference))
    diffs, given = [], 0
    for text, losses in zip(clean, scored["ref_loss"]):
        if losses is None:
            continue
        given += 1
        want = np.array(by_text[text]["ref_loss"], dtype=np.float64)
        got = np.array(losses, dtype=np.float64)
        assert np.array_equal(np.isnan(got), np.isnan(want)), "NaN positions differ"
        diffs.append(float(np.nanmax(np.abs(got - want))))
    out["shared_documents"] = given
    out["max_abs_difference"] = max(diffs)
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
