"""`catdog demo`: a local web page on a trained run, served by the standard library alone.

One page (demo_page.html: plain HTML and JavaScript, nothing fetched from elsewhere) and a small JSON
API under /api/. The run folder is fixed when the server starts; requests never name a path, and the
model is reloaded when the folder's files change. Model calls go through one lock, so concurrent
visitors are served in turn (/api/busy says what runs). Only pages this server served may call the API
(Host and Origin are checked: no other web site, no DNS rebinding); bad input of any kind is a 4xx with
a one-line message, a stalled request times out, and the server keeps serving.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import json
import math
import re
import socket
import sys
import threading
import time
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import numpy as np
from PIL import Image

from catdog.config import SAMPLERS, SampleConfig
from catdog.data import CLASS_NAMES, class_index
from catdog.demo import Demo, RunChanging
from catdog.pictures import MAX_UPLOAD_BYTES
from catdog.errors import UserError
from catdog.viz import image_grid

MAX_JSON_BYTES = 64 * 1024
MAX_DIGITS = 20                          # a JSON number longer than this is refused before it is converted
REQUEST_TIMEOUT_S = 30.0                 # a request (or its body) that stalls this long is dropped
LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")
ALL_INTERFACES = ("", "0.0.0.0")
SAMPLING_FIELDS = ("class", "sampler", "steps", "guidance", "seed")
FIELDS = {                               # what each endpoint reads; any other field is refused
    "generate": SAMPLING_FIELDS + ("n",),
    "denoise": SAMPLING_FIELDS,
    "morph": SAMPLING_FIELDS,
    "interpolate": SAMPLING_FIELDS,
    "translate": SAMPLING_FIELDS + ("image", "strength"),
    "nearest": ("image",),
}
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
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise UserError(f"{key} must be a finite number")
    return float(value)


def parse_request(route: str, body: bytes) -> dict:
    """The JSON object of a request to `route`: strict JSON (no NaN or Infinity, numbers that fit a
    double), no deeper than Python parses, and only the fields the endpoint reads."""
    def number(text: str):
        if len(text.lstrip("-").replace(".", "").split("e")[0].split("E")[0]) > MAX_DIGITS:
            raise UserError(f"the number {text[:12]}... has too many digits")
        value = float(text) if any(c in text for c in ".eE") else int(text)
        if not math.isfinite(value):
            raise UserError(f"the number {text[:12]} is out of range")
        return value

    def constant(name: str):
        raise UserError(f"{name} is not a JSON number")
    try:
        parsed = json.loads(body or b"{}", parse_float=number, parse_int=number, parse_constant=constant)
    except UserError:
        raise
    except RecursionError:
        raise UserError("the request is nested too deeply") from None
    except ValueError:
        raise UserError("the request is not JSON") from None
    if not isinstance(parsed, dict):
        raise UserError("the request must be a JSON object")
    unknown = sorted(set(parsed) - set(FIELDS[route]))
    if unknown:
        raise UserError(f"/api/{route} does not take {', '.join(map(repr, unknown))}; "
                        f"it takes {', '.join(FIELDS[route])}")
    return parsed


class Handler(BaseHTTPRequestHandler):
    server: "DemoServer"
    JSON_ROUTES = tuple(FIELDS)

    def setup(self):
        self.timeout = self.server.request_timeout               # read by StreamRequestHandler.setup
        super().setup()

    def do_GET(self):
        if not self._allowed():
            return
        if self.path in ("/", "/index.html"):
            page = resources.files("catdog").joinpath("demo_page.html").read_bytes()
            self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
        elif self.path == "/api/info":
            self._reply(HTTPStatus.OK, self.server.api.demo.info())
        elif self.path == "/api/busy":
            self._reply(HTTPStatus.OK, self.server.busy())
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": "no such page"})

    def do_POST(self):
        route = self.path.removeprefix("/api/")
        if not self._allowed():
            return
        if route not in self.JSON_ROUTES + ("reconstruct",):
            return self._refuse(HTTPStatus.NOT_FOUND, "no such endpoint")
        body = self._body(MAX_UPLOAD_BYTES if route == "reconstruct" else MAX_JSON_BYTES)
        if body is None:
            return
        try:
            if route == "reconstruct":
                call = lambda: self.server.api.reconstruct(body)
            else:
                parsed = parse_request(route, body)
                call = lambda: getattr(self.server.api, route)(parsed)
            with self.server.model_turn(route):                  # one model call at a time: a queue
                reloaded = self.server.api.demo.refresh()
                start = time.perf_counter()
                reply = call()
            reply["seconds"] = round(time.perf_counter() - start, 3)
            reply["reloaded"] = reloaded
            self._reply(HTTPStatus.OK, reply)
        except RunChanging as e:
            self._reply(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(e)})
        except UserError as e:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": str(e)})

    def _allowed(self) -> bool:
        """Only this server's own pages may talk to it: the Host must name it (a DNS-rebound name does
        not), and a browser's Origin, where sent, must be that host."""
        host = (self.headers.get("Host") or "").strip().lower()
        if not self.server.serves_host(host):
            self._refuse(HTTPStatus.FORBIDDEN, f"Host {host!r} is not this server; open {self.server.url}")
            return False
        origin = self.headers.get("Origin")
        if origin is not None and origin.strip().lower() != f"http://{host}":
            self._refuse(HTTPStatus.FORBIDDEN, f"requests from other pages ({origin[:80]}) are refused; "
                                               f"open {self.server.url}")
            return False
        return True

    def _body(self, limit: int) -> bytes | None:
        """The request body, or None after replying why it was refused (the connection then closes)."""
        if self.headers.get("Transfer-Encoding") is not None:
            return self._refuse(HTTPStatus.LENGTH_REQUIRED, "chunked bodies are not accepted; send Content-Length")
        lengths = self.headers.get_all("Content-Length") or ["0"]
        if len(lengths) != 1 or not re.fullmatch(r"[0-9]{1,15}", lengths[0].strip()):
            return self._refuse(HTTPStatus.BAD_REQUEST, "Content-Length must be one whole number of bytes")
        length = int(lengths[0])
        if length > limit:
            self._discard(length)
            return self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                f"the request is {length / 2**20:.1f} MB; the limit is {limit / 2**20:g} MB")
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            return self._refuse(HTTPStatus.REQUEST_TIMEOUT,
                                f"the request body did not arrive within {self.server.request_timeout:g} s")
        if len(body) < length:
            return self._refuse(HTTPStatus.BAD_REQUEST, f"the request ended after {len(body)} of {length} bytes")
        return body

    def _refuse(self, status: HTTPStatus, message: str) -> None:
        self.close_connection = True
        self._reply(status, {"error": message})

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

    def __init__(self, demo: Demo, host: str = "127.0.0.1", port: int = 7860, verbose: bool = True,
                 request_timeout: float = REQUEST_TIMEOUT_S):
        super().__init__((host, port), Handler)
        self.api, self.model_lock, self.verbose = Api(demo), threading.Lock(), verbose
        self.request_timeout = request_timeout
        self.exposed = host in ALL_INTERFACES
        self._state, self.running, self.waiting = threading.Lock(), None, 0

    def serves_host(self, host: str) -> bool:
        """Is `host` (a Host header) a name of this server? Locally: localhost or the bound address.
        Exposed on every interface: also any IP address and this machine's own names."""
        match = re.fullmatch(r"(\[[0-9a-f:.]+\]|[^:\[\]]+)(?::([0-9]{1,5}))?", host)
        if match is None or int(match.group(2) or 80) != self.server_address[1]:
            return False
        name = match.group(1)
        if name in LOCAL_NAMES or name == self.server_address[0]:
            return True
        if not self.exposed:
            return False
        try:
            ipaddress.ip_address(name.strip("[]"))
            return True
        except ValueError:
            return name in (socket.gethostname().lower(), socket.getfqdn().lower())

    @contextmanager
    def model_turn(self, route: str):
        """Hold the model for one request, recording what runs and how many wait (for /api/busy)."""
        with self._state:
            self.waiting += 1
        self.model_lock.acquire()
        with self._state:
            self.waiting -= 1
            self.running = (route, time.monotonic())
        try:
            yield
        finally:
            with self._state:
                self.running = None
            self.model_lock.release()

    def busy(self) -> dict:
        with self._state:
            running, waiting = self.running, self.waiting
        return {"running": running and running[0], "waiting": waiting,
                "seconds": round(time.monotonic() - running[1], 1) if running else 0.0}

    def handle_error(self, request, client_address):
        """A visitor that went away (reset, timeout) is one quiet line, not a traceback; a bug keeps it."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            if self.verbose:
                print(f"catdog demo: {client_address[0]}: {type(error).__name__}", file=sys.stderr)
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"
