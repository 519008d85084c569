"""Builds the documentation site and photographs pages with headless Chromium.

    python tools/screenshot_docs.py                      # -> docs/assets/screenshots/*.png
    python tools/screenshot_docs.py --pages=families/vit.html,benchmarks.html --width=1280

Needs Chromium (Debian: ``apt-get install chromium``). The site is built
with ``use_directory_urls: false`` so its pages and navigation work from
``file://``; each PNG is what a reader sees in the first screenful of that
page.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PAGES = "families/vit.html,benchmarks.html"


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("screenshot_docs: no Chromium on PATH (apt-get install chromium)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", default=DEFAULT_PAGES)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1600)
    parser.add_argument("--output_dir", default=os.path.join(ROOT, "docs", "assets", "screenshots"))
    args = parser.parse_args(argv)
    browser = chromium()
    os.makedirs(args.output_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        site = os.path.join(tmp, "site")
        subprocess.run([sys.executable, "-m", "mkdocs", "build", "--quiet", "-d", site],
                       cwd=ROOT, check=True)
        for page in filter(None, args.pages.split(",")):
            path = os.path.join(site, page)
            if not os.path.exists(path):
                sys.exit(f"screenshot_docs: the site has no page {page}")
            out = os.path.join(args.output_dir, page.replace("/", "_").replace(".html", ".png"))
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                            "--hide-scrollbars", f"--window-size={args.width},{args.height}",
                            f"--screenshot={out}", "file://" + path],
                           check=True, capture_output=True, timeout=120)
            print(out)


if __name__ == "__main__":
    main()
