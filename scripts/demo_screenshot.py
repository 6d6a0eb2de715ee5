"""Screenshot of the demo page on a run folder (docs/figures/demo.png), driven in headless Chromium.

    .venv/bin/python scripts/demo_screenshot.py [--run-dir pretrained] [--out docs/figures/demo.png]

Starts the server in-process on a free port, generates a grid, replays a denoising run, turns the dog
sample into a cat at rising strength, interpolates between two seeds, uploads a test image and turns it
into a cat, and looks up the nearest training images of a sample; prints the time each request took as
the page reports it.
"""

import argparse
import shutil
import tempfile
import threading
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

from catdog.data import create_cat_dog_dataset
from catdog.demo import Demo
from catdog.server import DemoServer

parser = argparse.ArgumentParser()
parser.add_argument("--run-dir", default="pretrained")
parser.add_argument("--out", default="docs/figures/demo.png")
args = parser.parse_args()

server = DemoServer(Demo(args.run_dir), "127.0.0.1", 0, verbose=False)
threading.Thread(target=server.serve_forever, daemon=True).start()
upload = Path(tempfile.mkdtemp()) / "test_dog.png"
images, labels = create_cat_dog_dataset("test")
Image.fromarray(images[labels == 1][3]).resize((128, 128), Image.Resampling.BICUBIC).save(upload)
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
    page = browser.new_page(viewport={"width": 1150, "height": 900})
    page.goto(server.url)
    page.wait_for_function("document.getElementById('model-info').textContent.includes('Model:')")
    for button, done in (("#generate", "#thumbs img"), ("#denoise", "#denoise-frame:not([hidden])"),
                         ("#morph", "#morph-strip img"), ("#interpolate", "#interpolate-strip img")):
        page.click(button)
        page.wait_for_selector(done, timeout=120_000)
    page.locator("#thumbs img").nth(2).click()
    page.wait_for_function("document.querySelectorAll('#nearest img').length === 7", timeout=120_000)
    page.set_input_files("#upload", str(upload))
    page.wait_for_selector("#upload-recon:not([hidden])", timeout=120_000)
    page.click("#translate")
    page.wait_for_selector("#translate-result:not([hidden])", timeout=120_000)
    for section in ("generate", "denoise", "morph", "interpolate", "upload", "translate", "nearest"):
        print(f"{section:9s} {page.text_content(f'#{section}-status')}")
    page.screenshot(path=args.out, full_page=True)
    browser.close()
print(f"wrote {args.out}")
