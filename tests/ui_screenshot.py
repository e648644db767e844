"""Screenshot what a person sees in the MLflow UI when comparing versions (a check, not a test).

    python tests/ui_screenshot.py --version 2 --against 1          # store: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db
    python tests/ui_screenshot.py --version 2 --against 1 --out-dir docs/ui

Starts `mlflow server` on the store at 127.0.0.1, then headless Chromium (Debian's
`chromium` package: `apt-get install chromium`) saves three screenshots:
  logged-models.png  the experiment's logged models, one row per variant, named after it
  version.png        the version page (short tags, model card, gate verdicts)
  compare.png        the registry's comparison of the two versions (the evaluation's metrics)
and stops the server. Open the PNGs to check the figures are visible.
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

from ui_pages import find_chromium, mlflow_ui, screenshot  # noqa: E402


def shrink(path: Path) -> None:
    """A 64-colour palette keeps the UI's text sharp at a fraction of the size (for docs/ui/)."""
    from PIL import Image

    with Image.open(path) as img:
        img.convert("RGB").quantize(colors=64).save(path, optimize=True)


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
    with contextlib.nullcontext(args.ui.rstrip("/")) if args.ui else mlflow_ui(store, port=args.port) as base:
        pages = {  # file: (url, window height: the comparison's metrics sit below its parameters)
            "logged-models.png": (f"{base}/#/experiments/{experiment_id}/models", 700),
            "version.png": (f"{base}/#/models/{args.name}/versions/{mv.version}", 2000),
            "compare.png": (compare_url(base, args.name, {other.version: other.run_id, mv.version: mv.run_id}), 4000),
        }
        for name, (url, height) in pages.items():
            shrink(screenshot(browser, url, args.out_dir / name, height=height))
            print(f"{args.out_dir / name}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
