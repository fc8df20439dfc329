"""Screenshots of the web page (`hub serve` at /) over the shipped registry, for the README: the catalog, and an NER
result (conll2003's registry example, entities highlighted in the text) beside its model card.

    python benchmarks/web_screenshots.py        # needs Playwright and Chromium (`make browser`)

Writes benchmarks/results/web_catalog.png and benchmarks/results/web_ner.png.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

import hub  # noqa: E402
from hub.server import create_app, running_server  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", type=Path, default=ROOT / "registry.yaml")
    parser.add_argument("--task", default="conll2003", help="the tagging task whose example is drawn")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no Chromium installed: `make browser` (Debian: apt-get install chromium)")
    served = hub.Hub.load(args.registry)
    with running_server(create_app(served)) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.set_default_timeout(120_000)
        page.goto(url + "/")
        page.wait_for_selector("#catalog tr[data-task]")
        page.screenshot(path=str(args.out / "web_catalog.png"), full_page=True)
        page.goto(f"{url}/#/task/{args.task}")
        page.wait_for_selector("#try-form")
        page.click("#run")
        page.wait_for_selector("#result mark.ent")
        page.screenshot(path=str(args.out / "web_ner.png"))
        browser.close()
    print(f"wrote {args.out / 'web_catalog.png'} and {args.out / 'web_ner.png'}")


if __name__ == "__main__":
    main()
