"""`catdog demo`: the page's operations, its server under bad input and load, and the page itself in a
real headless Chromium. Oracles: `catdog sample` for the same settings; the guided sampler for the
ends of the cat-dog morph; the upload rules in demo.py. Run: pytest tests/test_demo.py"""

import io
import json
import os
import shutil
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from catdog.cli import main
from catdog.config import SampleConfig
from catdog.data import create_cat_dog_dataset
from catdog.demo import Demo
from catdog.pictures import read_upload
from catdog.errors import UserError
from catdog.server import DemoServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FAST = SampleConfig(steps=5)


@pytest.fixture(scope="module")
def demo(tiny_run):
    return Demo(tiny_run.root)


@pytest.fixture(scope="module")
def server(demo):
    server = DemoServer(demo, "127.0.0.1", 0, verbose=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def post(server, endpoint: str, body: bytes, timeout: float = 120):
    """(status, reply) of a POST to the running server."""
    request = urllib.request.Request(server.url + "api/" + endpoint, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_generate_is_what_catdog_sample_writes(demo, tiny_run, tmp_path):
    npz = tmp_path / "dogs.npz"
    assert main(["sample", "--run-dir", str(tiny_run.root), "--class", "dog", "--n", "6", "--steps", "5",
                 "--seed", "3", "--npz", str(npz)]) == 0
    images = demo.generate(1, 6, SampleConfig(steps=5, seed=3))
    np.testing.assert_array_equal(images, np.load(npz)["images"])


def test_morph_turns_the_cat_sample_into_the_dog_sample(demo):
    """It starts at the cat sample of the seed and ends at strength 1, which is the dog sample of the
    same seed up to the signal alpha_bar_T leaves; in between, img2img of that cat at each strength."""
    strip, strengths = demo.morph(0, FAST, frames=3)
    assert strengths == [0.0, 0.5, 1.0] and strip.shape == (3, 32, 32, 3)
    cat, dog = (demo.generate(c, 1, FAST)[0] for c in (0, 1))
    np.testing.assert_array_equal(strip[0], cat)
    np.testing.assert_array_equal(strip[1], demo.translate(cat, 1, 0.5, FAST))
    assert np.abs(strip[-1].astype(int) - dog).max() <= 3


def test_interpolation_ends_at_the_two_samples(demo):
    frames = demo.interpolate((4, 5), (1, 0), FAST, frames=4)
    np.testing.assert_array_equal(frames[0], demo.generate(1, 1, replace(FAST, seed=4))[0])
    np.testing.assert_array_equal(frames[-1], demo.generate(0, 1, replace(FAST, seed=5))[0])


def test_denoising_is_the_real_trajectory(demo):
    """Its frames decode z_t; the last one is the unrefined sample of the same seed."""
    frames, labels = demo.denoising(1, FAST)
    assert frames.shape == (FAST.steps + 1, 32, 32, 3) and labels[0] == "pure noise"
    np.testing.assert_array_equal(frames[-1], demo.generate(1, 1, replace(FAST, refiner=False))[0])


def test_nearest_finds_a_training_image_itself(demo):
    """Oracle: a training image's nearest training image is itself, at distance 0."""
    found = demo.nearest(demo.train_images[123])
    assert found["pixel"][0].index == 123 and found["pixel"][0].distance == 0
    assert found["latent"][0].distance < 1e-3


def test_an_uploaded_photo_is_cropped_resized_and_reconstructed(demo):
    test_image = create_cat_dog_dataset("test")[0][0]
    big = Image.fromarray(test_image).resize((300, 200), Image.Resampling.NEAREST)
    for data in (png_bytes(big), png_bytes(big, "JPEG")):
        original, recon, p_dog = demo.reconstruct(data)
        assert original.shape == recon.shape == (32, 32, 3) and 0 <= p_dog <= 1
    square = png_bytes(Image.fromarray(test_image))
    np.testing.assert_array_equal(read_upload(square), test_image)       # 32x32 stays as it is


def truncated_jpeg() -> bytes:
    """A real photo-like JPEG cut after 60% of its bytes (header intact, scan data missing)."""
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    data = png_bytes(Image.fromarray(noise), "JPEG")
    return data[:len(data) * 6 // 10]


BAD_UPLOADS = {
    "50 MB": (lambda: b"\0" * (50 * 2**20), "limit is 10 MB"),
    "not an image": (lambda: b"hello, not a picture", "not an image"),
    "truncated JPEG": (lambda: truncated_jpeg(), "truncated"),
    "1x1": (lambda: png_bytes(Image.new("RGB", (1, 1))), "at least 8"),
    "10000x10000": (lambda: png_bytes(Image.new("1", (10000, 10000))), "megapixels"),
    "GIF": (lambda: png_bytes(Image.new("RGB", (40, 40)), "GIF"), "PNG or JPEG"),
}


@pytest.mark.parametrize("name", sorted(BAD_UPLOADS))
def test_bad_uploads_are_one_clear_message_and_the_server_keeps_serving(server, name):
    make, message = BAD_UPLOADS[name]
    with pytest.raises(UserError, match=message):
        read_upload(make())
    status, reply = post(server, "reconstruct", make())
    assert status in (400, 413) and message in reply["error"], reply
    status, _ = post(server, "generate", json.dumps({"class": "cat", "n": 1, "steps": 5}).encode())
    assert status == 200


@pytest.mark.parametrize("body,message", [
    ({"class": "horse"}, "unknown class"), ({"class": "dog", "n": 65}, "1..64"),
    ({"class": "dog", "steps": 0}, "--steps"), ({"class": "dog", "guidance": 1e9}, "guidance"),
    ({"class": "dog", "seed": -1}, "seed"), ({"class": "dog", "sampler": "euler"}, "sampler"),
    ({"class": "dog", "n": "16"}, "whole number"), ("not json", "not JSON"),
])
def test_bad_requests_get_a_message(server, body, message):
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    status, reply = post(server, "generate", raw)
    assert status == 400 and message in reply["error"], reply


def test_translate_requests(server, demo):
    """The upload's pixels come back from /api/reconstruct; /api/translate turns them into the target class,
    as Demo.translate does; a strength outside [0, 1] or a malformed image is a 400 with a message."""
    test_image = create_cat_dog_dataset("test")[0][0]
    status, reply = post(server, "reconstruct", png_bytes(Image.fromarray(test_image)))
    assert status == 200
    body = {"image": reply["raw"], "class": "dog", "strength": 0.6, "steps": 5}
    status, reply = post(server, "translate", json.dumps(body).encode())
    assert status == 200 and reply["image"].startswith("data:image/png;base64,")
    for change, message in (({"strength": 1.5}, "--strength"), ({"image": "AAAA"}, "3072 bytes"),
                            ({"class": "horse"}, "unknown class")):
        status, reply = post(server, "translate", json.dumps({**body, **change}).encode())
        assert status == 400 and message in reply["error"], reply


def test_twenty_visitors_at_once_are_served_in_turn(server):
    body = json.dumps({"class": "dog", "n": 4, "steps": 5}).encode()
    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda _: post(server, "generate", body), range(20)))
    assert all(status == 200 for status, _ in replies)
    assert len({reply["png"] for _, reply in replies}) == 1           # same settings, same images


def test_demo_command_refuses_a_bad_port_and_a_missing_run(tmp_path, capsys):
    assert main(["demo", "--run-dir", str(tmp_path / "none")]) == 2
    assert main(["demo", "--port", "70000"]) == 2
    err = capsys.readouterr().err
    assert "no such run folder" in err and "--port" in err


def test_the_page_in_a_real_browser(server, tmp_path):
    """Headless Chromium (Debian's package) drives the page: generate a grid, upload a real test
    image and an invalid file, and read what the page shows. CI installs Chromium, so there a
    missing browser fails instead of skipping."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install chromium (apt-get install chromium)")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    good = tmp_path / "cat.png"
    Image.fromarray(create_cat_dog_dataset("test")[0][0]).resize((96, 96)).save(good)
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not a picture")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        page.goto(server.url)
        page.wait_for_function("document.getElementById('model-info').textContent.includes('Model:')")
        page.fill("#n", "4")
        page.fill("#steps", "5")
        page.click("#generate")
        page.wait_for_function("document.querySelectorAll('#thumbs img').length === 4", timeout=60_000)
        assert page.eval_on_selector_all("#thumbs img", "imgs => imgs.every(i => i.complete && i.naturalWidth === 128)")
        assert page.get_attribute("#download-npz", "href").startswith("data:application/octet-stream;base64,")
        page.locator("#thumbs img").first.click()                       # is it copying?
        page.wait_for_function("document.querySelectorAll('#nearest img').length === 7", timeout=60_000)
        page.set_input_files("#upload", str(good))
        page.wait_for_selector("#upload-recon:not([hidden])", timeout=60_000)
        assert "P(dog)" in page.text_content("#upload-pdog")
        page.set_input_files("#upload", str(bad))
        page.wait_for_function("document.getElementById('upload-status').textContent.startsWith('Error')")
        assert "not an image" in page.text_content("#upload-status")
        page.click("#denoise")
        page.wait_for_selector("#denoise-frame:not([hidden])", timeout=60_000)
        assert page.get_attribute("#denoise-slider", "max") == "5"
        page.click("#morph")                                            # cat <-> dog at rising strength
        page.wait_for_function("document.querySelectorAll('#morph-strip img').length === 9", timeout=60_000)
        captions = page.eval_on_selector_all("#morph-strip figcaption", "cs => cs.map(c => c.textContent)")
        assert captions[0] == "the sample" and captions[-1] == "cat 1.00"   # the class setting is dog
        page.click("#interpolate")
        page.wait_for_function("document.querySelectorAll('#interpolate-strip img').length === 9", timeout=60_000)
        page.set_input_files("#upload", str(good))                       # turn the uploaded cat into a dog
        page.wait_for_selector("#translate-controls:not([hidden])", timeout=60_000)
        page.fill("#strength", "0.7")
        page.click("#translate")
        page.wait_for_selector("#translate-result:not([hidden])", timeout=60_000)
        assert page.text_content("#translate-caption") == f"{page.text_content('#translate-target')}, strength 0.70"
        assert page.eval_on_selector("#translate-result", "i => i.complete && i.naturalWidth === 128")
        browser.close()
