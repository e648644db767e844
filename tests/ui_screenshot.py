"""Screenshot what a person sees in the MLflow UI when comparing versions (a check, not a test).

    python tests/ui_screenshot.py --version 2 --against 1          # store: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db
    python tests/ui_screenshot.py --version 2 --against 1 --out-dir docs/ui

Starts `mlflow server` on the store at 127.0.0.1, then Playwright drives headless Chromium
(Debian's `chromium` package: `apt-get install chromium`; Playwright's own browser download is
not needed) and saves three full-page screenshots:
  logged-models.png  the experiment's logged models, one row per variant, named after it
  version.png        the version page (short tags, model card, gate verdicts)
  compare.png        the registry's comparison of the two versions (the evaluation's metrics)
and stops the server. The UI shows long lists (the comparison's parameters and metrics) in
boxes of fixed height that scroll; before each shot those boxes are opened to their full height,
so every figure is in the picture. Open the PNGs to check.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from flows.compare import compare_url  # noqa: E402
from quantgate.tracking import DEFAULT_MODEL_NAME, DEFAULT_TRACKING_URI  # noqa: E402

from ui_pages import CHROMIUM_FLAGS, find_chromium, mlflow_ui  # noqa: E402

# Lift the height limit of every box that scrolls, so a full-page shot holds all of its rows.
OPEN_SCROLL_BOXES = """() => {
  let opened = 0;
  for (const el of document.querySelectorAll('*')) {
    const style = getComputedStyle(el);
    if (['auto', 'scroll'].includes(style.overflowY) && el.scrollHeight > el.clientHeight + 2) {
      el.style.maxHeight = 'none'; el.style.height = 'auto'; el.style.overflowY = 'visible';
      opened += 1;
    }
  }
  return opened;
}"""

TALLEST = "() => Math.max(...Array.from(document.querySelectorAll('*'), (el) => el.scrollHeight))"


def shoot(page, url: str, out: Path, wait_for: str) -> Path:
    """Load ``url``, wait until ``wait_for`` is on the page, open the scroll boxes, save a full-page PNG."""
    page.goto(url)
    page.get_by_text(wait_for, exact=False).first.wait_for(timeout=180_000)
    page.wait_for_timeout(3000)  # the UI polls, so the network never idles: let tables and charts settle
    for _ in range(3):  # opening a box can reveal nested ones
        if not page.evaluate(OPEN_SCROLL_BOXES):
            break
    # The app fills the window and scrolls inside it, so a "full page" is one window: grow the
    # window to the tallest content instead, then shoot it whole.
    height = page.evaluate(TALLEST)
    page.set_viewport_size({"width": 1500, "height": min(max(height + 80, 1000), 16000)})
    page.wait_for_timeout(1500)
    page.screenshot(path=str(out), full_page=True)
    if not out.exists() or out.stat().st_size < 10_000:
        raise RuntimeError(f"no usable screenshot at {out}")
    return out


def shrink(path: Path) -> None:
    """Cut the empty space below the content (the window was grown to the tallest box), and keep
    the UI's text sharp with a 64-colour palette at a fraction of the size (for docs/ui/)."""
    from PIL import Image, ImageChops

    with Image.open(path) as img:
        rgb = img.convert("RGB")
    # inside the content pane: not the side bars, nor the pane's own borders and bottom edge
    middle = rgb.crop((215, 0, min(rgb.width, 1100), rgb.height - 30))
    box = ImageChops.difference(middle, Image.new("RGB", middle.size, "white")).point(lambda v: 255 if v > 24 else 0)
    bottom = (box.getbbox() or (0, 0, 0, rgb.height))[3]
    rgb.crop((0, 0, rgb.width, min(rgb.height, bottom + 40))).quantize(colors=64).save(path, optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--version", required=True, help="The version whose page is shot.")
    parser.add_argument("--against", required=True, help="The version it is compared with.")
    parser.add_argument("--out-dir", default="ui-shots", type=Path)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--ui", default=None, help="Base URL of a UI already serving this store (else one is started).")
    args = parser.parse_args()
    browser = find_chromium()
    if not browser:
        raise SystemExit("headless Chromium not found: apt-get install chromium")
    store = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    os.environ["MLFLOW_TRACKING_URI"] = store
    import mlflow

    client = mlflow.MlflowClient()
    mv, other = (client.get_model_version(args.name, v) for v in (args.version, args.against))
    experiment_id = client.get_run(mv.run_id).info.experiment_id
    args.out_dir.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with contextlib.ExitStack() as stack:
        base = args.ui.rstrip("/") if args.ui else stack.enter_context(mlflow_ui(store, port=args.port))
        pages = {  # file: (url, text that says the page has its data)
            "logged-models.png": (f"{base}/#/experiments/{experiment_id}/models", mv.tags.get("variant", "model")),
            "version.png": (f"{base}/#/models/{args.name}/versions/{mv.version}", f"Version {mv.version}"),
            "compare.png": (
                compare_url(base, args.name, {other.version: other.run_id, mv.version: mv.run_id}),
                "macro_f1",
            ),
        }
        playwright = stack.enter_context(sync_playwright())
        chromium = playwright.chromium.launch(executable_path=browser, args=CHROMIUM_FLAGS[1:])
        stack.callback(chromium.close)
        page = chromium.new_page(viewport={"width": 1500, "height": 1000})
        for name, (url, wait_for) in pages.items():
            shrink(shoot(page, url, args.out_dir / name, wait_for))
            print(f"{args.out_dir / name}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
