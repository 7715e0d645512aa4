"""Regenerate the README's demo block and figures from one demo run (``make docs-numbers``).

Runs ``concept-tracker demo`` at its defaults (seed 0) into a scratch folder, then writes

- ``docs/demo_results.json``: the tables and checks as the demo printed them, plus the run's
  wall time and load;
- ``docs/demo_<figure>.png``: the report figures the README shows;
- the README block between the demo markers, rendered from that JSON.

``tests/test_docs.py`` checks that the README block is the rendering of the JSON, and (marked
slow) that a fresh demo run at the same seed gives the same JSON.

Usage: ``python tools/docs_numbers.py [--output-dir runs/docs-numbers]``; with
``--render-only``, the README block is rendered again from the committed JSON (after a change
to the rendering) without running the demo.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from concept_tracker.demo import DOCS_FIGURES, DemoConfig, demo_results, docs_block, replace_docs_block, run_demo

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "demo_results.json"
README = ROOT / "README.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="runs/docs-numbers", help="scratch folder of the demo runs")
    parser.add_argument("--render-only", action="store_true", help="render the README block from the JSON only")
    args = parser.parse_args()
    if args.render_only:
        results = json.loads(RESULTS.read_text(encoding="utf-8"))
        README.write_text(replace_docs_block(README.read_text(encoding="utf-8"), docs_block(results)), encoding="utf-8")
        return
    config = DemoConfig(output_dir=args.output_dir, progress=False)
    start = time.perf_counter()
    summaries = run_demo(config, force=True)
    wall = time.perf_counter() - start
    results = demo_results(config, summaries)
    results["timing"] = {
        "wall_seconds": round(wall),
        "load_average": round(os.getloadavg()[0], 1),
        "cpus": os.cpu_count(),
    }
    RESULTS.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    for name in DOCS_FIGURES:
        shutil.copyfile(Path(args.output_dir) / f"{name}.png", ROOT / "docs" / f"demo_{name}.png")
    README.write_text(replace_docs_block(README.read_text(encoding="utf-8"), docs_block(results)), encoding="utf-8")
    print(f"wrote {RESULTS.relative_to(ROOT)}, the README demo block and {len(DOCS_FIGURES)} figures ({wall:.0f} s)")


if __name__ == "__main__":
    main()
