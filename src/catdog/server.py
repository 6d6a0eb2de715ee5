"""`catdog demo`: a local web page on a trained run, served by the standard library alone.

One page (demo_page.html: plain HTML and JavaScript, nothing fetched from elsewhere) and a small JSON
API under /api/. The run folder is fixed when the server starts; requests never name a path. Model
calls go through one lock, so concurrent visitors are served in turn; bad input is a 400 with a
one-line message, and the server keeps serving.
"""

from __future__ import annotations

import base64
import io
import json
import math
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import numpy as np
from PIL import Image

from catdog.config import SAMPLERS, SampleConfig
from catdog.data import CLASS_NAMES, class_index
from catdog.demo import Demo
from catdog.pictures import MAX_UPLOAD_BYTES
from catdog.errors import UserError
from catdog.viz import image_grid

MAX_JSON_BYTES = 64 * 1024
MAX_DISCARD_BYTES = 256 * 2**20          # a refused body larger than this is not read: the connection closes
SHOW_SCALE = 4                           # 32 px is tiny: images are shown 4x, nearest-neighbour


def png_data_url(image: np.ndarray, scale: int = 1) -> str:
    """uint8 (H, W, 3) -> 'data:image/png;base64,...', upscaled by pixel repetition."""
    buffer = io.BytesIO()
    Image.fromarray(image.repeat(scale, 0).repeat(scale, 1)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def npz_data_url(images: np.ndarray, labels: np.ndarray) -> str:
    """The .npz `catdog sample --npz` writes, as a data URL for a download link."""
    buffer = io.BytesIO()
    np.savez(buffer, images=images, labels=labels)
    return "data:application/octet-stream;base64," + base64.b64encode(buffer.getvalue()).decode()


def grid_of(images: np.ndarray, scale: int) -> np.ndarray:
    """The PNG grid `catdog sample --out` writes (8 per row)."""
    return image_grid(images, min(8, len(images)), scale=scale)


class Api:
    """The page's requests -> JSON replies. Each method takes the parsed request body."""

    def __init__(self, demo: Demo):
        self.demo = demo

    def sample_config(self, body: dict) -> SampleConfig:
        sampler = body.get("sampler", "ddim")
        if sampler not in SAMPLERS:
            raise UserError(f"sampler must be one of {', '.join(SAMPLERS)}")
        d = SampleConfig()
        return SampleConfig(sampler, _int(body, "steps", d.steps), _float(body, "guidance", d.guidance),
                            _int(body, "seed", d.seed))

    def generate(self, body: dict) -> dict:
        class_id = class_index(str(body.get("class", "")))
        n = _int(body, "n", 16)
        images = self.demo.generate(class_id, n, self.sample_config(body))
        labels = np.full(n, class_id, dtype=np.int64)
        return {"png": png_data_url(grid_of(images, 2)), "npz": npz_data_url(images, labels),
                "images": [png_data_url(im, SHOW_SCALE) for im in images],
                "raw": [base64.b64encode(im.tobytes()).decode() for im in images]}

    def denoise(self, body: dict) -> dict:
        frames, labels = self.demo.denoising(class_index(str(body.get("class", ""))), self.sample_config(body))
        return {"frames": [png_data_url(f, SHOW_SCALE * 2) for f in frames], "labels": labels}

    def morph(self, body: dict) -> dict:
        class_id = class_index(str(body.get("class", "")))
        images, strengths = self.demo.morph(class_id, self.sample_config(body))
        return {"images": [png_data_url(im, SHOW_SCALE) for im in images], "strengths": strengths,
                "target": CLASS_NAMES[1 - class_id]}

    def translate(self, body: dict) -> dict:
        image = _image(body)
        out = self.demo.translate(image, class_index(str(body.get("class", ""))), _float(body, "strength", 0.5),
                                  self.sample_config(body))
        return {"image": png_data_url(out, SHOW_SCALE)}

    def interpolate(self, body: dict) -> dict:
        seed = _int(body, "seed", 0)
        class_id = class_index(str(body.get("class", "")))
        frames = self.demo.interpolate((seed, seed + 1), (class_id, 1 - class_id), self.sample_config(body))
        return {"images": [png_data_url(im, SHOW_SCALE) for im in frames]}

    def reconstruct(self, upload: bytes) -> dict:
        original, recon, p_dog = self.demo.reconstruct(upload)
        return {"original": png_data_url(original, SHOW_SCALE), "reconstruction": png_data_url(recon, SHOW_SCALE),
                "p_dog": p_dog, "raw": base64.b64encode(original.tobytes()).decode()}

    def nearest(self, body: dict) -> dict:
        image = _image(body)
        found = self.demo.nearest(image)
        show = lambda ns: [{"image": png_data_url(self.demo.train_images[n.index], SHOW_SCALE), "index": n.index,
                            "label": n.label, "distance": round(n.distance, 4)} for n in ns]
        return {"query": png_data_url(image, SHOW_SCALE), "pixel": show(found["pixel"]),
                "latent": show(found["latent"])}


def _image(body: dict) -> np.ndarray:
    """The request's 'image': base64 of 32x32 RGB uint8 pixels."""
    try:
        raw = base64.b64decode(str(body.get("image", "")), validate=True)
    except ValueError:
        raise UserError("image must be base64") from None
    if len(raw) != 32 * 32 * 3:
        raise UserError("image must be 32x32 RGB (3072 bytes)")
    return np.frombuffer(raw, np.uint8).reshape(32, 32, 3).copy()


def _int(body: dict, key: str, default: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise UserError(f"{key} must be a whole number")
    return int(value)


def _float(body: dict, key: str, default: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{key} must be a finite number")
    return float(value)


class Handler(BaseHTTPRequestHandler):
    server: "DemoServer"
    JSON_ROUTES = ("generate", "denoise", "morph", "translate", "interpolate", "nearest")

    def do_GET(self):
        if self.path in ("/", "/index.html"):
            page = resources.files("catdog").joinpath("demo_page.html").read_bytes()
            self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
        elif self.path == "/api/info":
            self._reply(HTTPStatus.OK, self.server.api.demo.info())
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": "no such page"})

    def do_POST(self):
        route = self.path.removeprefix("/api/")
        if route not in self.JSON_ROUTES + ("reconstruct",):
            return self._reply(HTTPStatus.NOT_FOUND, {"error": "no such endpoint"})
        limit = MAX_UPLOAD_BYTES if route == "reconstruct" else MAX_JSON_BYTES
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= limit:
            self._discard(length)
            mb = length / 2**20
            return self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               {"error": f"the request is {mb:.1f} MB; the limit is {limit / 2**20:g} MB"})
        body = self.rfile.read(length)
        try:
            if route == "reconstruct":
                call = lambda: self.server.api.reconstruct(body)
            else:
                try:
                    parsed = json.loads(body or b"{}")
                except ValueError:
                    raise UserError("the request is not JSON") from None
                if not isinstance(parsed, dict):
                    raise UserError("the request must be a JSON object")
                call = lambda: getattr(self.server.api, route)(parsed)
            with self.server.model_lock:                         # one model call at a time: a queue
                start = time.perf_counter()
                reply = call()
            reply["seconds"] = round(time.perf_counter() - start, 3)
            self._reply(HTTPStatus.OK, reply)
        except UserError as e:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": str(e)})

    def _discard(self, length: int) -> None:
        """Read and drop a refused body (so the client sees the reply, not a reset), up to a bound."""
        left = length if 0 <= length <= MAX_DISCARD_BYTES else 0
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)
        self.close_connection = True

    def _reply(self, status: HTTPStatus, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):                       # one quiet line per request
        if self.server.verbose:
            super().log_message(format, *args)


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64                                      # 20 visitors at once: none refused

    def __init__(self, demo: Demo, host: str = "127.0.0.1", port: int = 7860, verbose: bool = True):
        super().__init__((host, port), Handler)
        self.api, self.model_lock, self.verbose = Api(demo), threading.Lock(), verbose

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"
