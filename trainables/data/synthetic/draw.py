"""Drawing primitives of the synthetic generators: coordinate grids, soft shapes, blobs, smoothing."""

from __future__ import annotations

import numpy as np


def grid(width: int, height: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1]: (x across columns, y down rows)."""
    x = (np.arange(width) + 0.5) / width
    y = (np.arange(height or width) + 0.5) / (height or width)
    return np.meshgrid(x, y)


def soft_inside(x, y, cx, cy, a, b, angle, edge):
    """1 inside the rotated ellipse, 0 outside, with a soft edge `edge` wide (relative)."""
    dx, dy = x - cx, y - cy
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / a
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / b
    return 1 / (1 + np.exp(np.clip((np.sqrt(u * u + v * v) - 1) / edge, -50, 50)))


def blob(x, y, cx, cy, sigma):
    return np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))


def lungs(x, y, shapes, edge):
    """Soft lung field: each lung (cx, cy, a, b, angle, side) an ellipse with a medial notch (kidney-like)."""
    field = np.zeros_like(x)
    for cx, cy, a, b, angle, side in shapes:
        notch = soft_inside(x, y, cx - side * 0.95 * a, cy + 0.25 * b, 0.45 * a, 0.35 * b, 0.0, edge)
        field = np.maximum(field, soft_inside(x, y, cx, cy, a, b, angle, edge) * (1 - notch))
    return field


def smooth(field: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with `sigma` in pixels (periodic borders), by FFT."""
    fy = np.fft.fftfreq(field.shape[0])[:, None]
    fx = np.fft.rfftfreq(field.shape[1])[None, :]
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
    return np.fft.irfft2(np.fft.rfft2(field) * kernel, s=field.shape)


def to_uint8(picture: np.ndarray) -> np.ndarray:
    return (np.clip(picture, 0, 1) * 255).round().astype(np.uint8)
