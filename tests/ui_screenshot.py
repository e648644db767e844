"""Screenshot what a person sees in the MLflow UI for one version (a check, not a unit test).

    python tests/ui_screenshot.py --version 2                 # store: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db
    python tests/ui_screenshot.py --version 2 --out-dir ui-shots

Starts `mlflow server` on the store at 127.0.0.1, then headless Chromium (Debian's
`chromium` package: `apt-get install chromium`) takes two screenshots:
  version.png       the model version page (tags, description with the model card and gate verdicts)
  logged-model.png  the version's logged model page (the evaluator's metrics, per model)
and stops the server. Open the PNGs to check the figures are visible.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flows.tracking import DEFAULT_MODEL_NAME, DEFAULT_TRACKING_URI, logged_model_id  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1400,1700", "--virtual-time-budget=20000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def screenshot(browser: str, url: str, out: Path, profile: Path) -> None:
    subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}", url],
                   check=True, capture_output=True, timeout=120)
    if not out.exists() or out.stat().st_size < 10_000:
        raise SystemExit(f"no usable screenshot at {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--version", required=True)
    parser.add_argument("--out-dir", default="ui-shots", type=Path)
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        raise SystemExit("headless Chromium not found: apt-get install chromium")
    store = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    os.environ["MLFLOW_TRACKING_URI"] = store
    import mlflow

    mv = mlflow.MlflowClient().get_model_version(args.name, args.version)
    experiment_id = mlflow.get_run(mv.run_id).info.experiment_id
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if requests.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or too busy starting to answer
                time.sleep(1)
        else:
            raise SystemExit("mlflow server did not start")
        args.out_dir.mkdir(parents=True, exist_ok=True)
        profile = args.out_dir / ".chromium-profile"
        pages = {"version.png": f"{base}/#/models/{args.name}/versions/{args.version}"}
        if logged_model_id(mv):
            pages["logged-model.png"] = f"{base}/#/experiments/{experiment_id}/models/{logged_model_id(mv)}"
        for name, url in pages.items():
            screenshot(browser, url, args.out_dir / name, profile)
            print(f"{args.out_dir / name}: {url}")
        shutil.rmtree(profile, ignore_errors=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
