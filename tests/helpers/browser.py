"""Headless Chromium for page tests, and a small PNG reader to check screenshots.

CI installs the Debian ``chromium`` package, so a missing browser fails the test
instead of skipping it: a skipped page test would hide a broken page.
"""

import os
import signal
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT = 60.0

_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {2: 3, 6: 4}  # PNG colour type -> bytes per pixel at 8 bits


def screenshot(url: str, out: Path, width: int = 1280, height: int = 800) -> None:
    """Render ``url`` in a ``width`` x ``height`` window and save a PNG to ``out``."""
    _run_chromium(f"--screenshot={out}", f"--window-size={width},{height}", url)

    assert out.is_file(), f"chromium exited without writing {out}"


def dump_dom(url: str) -> str:
    """The DOM of ``url`` after loading, serialised as HTML."""
    return _run_chromium("--dump-dom", url)


def _run_chromium(*args: str) -> str:
    """Run one headless Chromium with a throwaway profile; return its stdout.

    Chromium forks helpers (zygote, renderer), so it runs in its own session and a
    timeout kills the whole group, before the temporary profile is removed.
    """
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install the chromium package (apt)")

    with tempfile.TemporaryDirectory(
        prefix="hyperwheel-chromium-", ignore_cleanup_errors=True
    ) as profile:
        command = [str(CHROMIUM), *_FLAGS, f"--user-data-dir={profile}", *args]
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            pytest.fail(f"chromium took over {TIMEOUT} s: {' '.join(command)}")

    if process.returncode != 0:
        tail = stderr.decode(errors="replace")[-2000:]
        pytest.fail(f"chromium exited {process.returncode}: {tail}")

    return stdout.decode()


@dataclass(frozen=True)
class Image:
    """Decoded 8-bit pixels, row after row, ``channels`` bytes per pixel."""

    width: int
    height: int
    channels: int
    pixels: bytes


def read_png(path: Path) -> Image:
    """Decode the PNGs Chromium writes: 8-bit RGB or RGBA, not interlaced."""
    data = path.read_bytes()
    assert data.startswith(_PNG_SIGNATURE), f"{path} is not a PNG"

    chunks: dict[bytes, bytes] = {}
    offset = len(_PNG_SIGNATURE)
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        chunks[kind] = chunks.get(kind, b"") + data[offset + 8 : offset + 8 + length]
        offset += 12 + length  # length, type, data, CRC

    width, height, depth, colour, _, _, interlace = struct.unpack(
        ">IIBBBBB", chunks[b"IHDR"]
    )
    if depth != 8 or colour not in _CHANNELS or interlace:
        raise ValueError(f"{path}: unsupported PNG ({depth=}, {colour=})")

    channels = _CHANNELS[colour]
    raw = zlib.decompress(chunks[b"IDAT"])
    pixels = _unfilter(raw, width * channels, height, channels)

    return Image(width, height, channels, pixels)


def colour_fraction(png: Path, rgb: tuple[int, int, int], tolerance: int = 30) -> float:
    """Fraction of pixels whose every channel is within ``tolerance`` of ``rgb``."""
    image = read_png(png)
    r, g, b = rgb
    step = image.channels
    pixels = image.pixels

    near = sum(
        1
        for i in range(0, len(pixels), step)
        if abs(pixels[i] - r) <= tolerance
        and abs(pixels[i + 1] - g) <= tolerance
        and abs(pixels[i + 2] - b) <= tolerance
    )

    return near / (image.width * image.height)


def _unfilter(raw: bytes, stride: int, height: int, bpp: int) -> bytes:
    """Undo PNG's per-row filters (None, Sub, Up, Average, Paeth)."""
    out = bytearray()
    previous = bytearray(stride)
    for row in range(height):
        start = row * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray(
                (a + b) & 0xFF for a, b in zip(line, previous, strict=True)
            )
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + (left + previous[i]) // 2) & 0xFF
        elif kind == 4:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                corner = previous[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + _paeth(left, previous[i], corner)) & 0xFF
        elif kind != 0:
            raise ValueError(f"unknown PNG filter type {kind} on row {row}")
        out += line
        previous = line

    return bytes(out)


def _paeth(left: int, up: int, corner: int) -> int:
    estimate = left + up - corner
    to_left, to_up = abs(estimate - left), abs(estimate - up)
    to_corner = abs(estimate - corner)
    if to_left <= to_up and to_left <= to_corner:
        return left
    if to_up <= to_corner:
        return up

    return corner
