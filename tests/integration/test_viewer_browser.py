"""The transcript viewer as a person sees it: Debian's headless chromium renders transcripts.html
to a PNG, and the picture must not be blank. Skipped when chromium is not installed
(`apt-get install chromium`), except in CI (CI=true), where .ci/run installs it: there it fails."""

import json
import os
import shutil
import struct
import subprocess
import zlib
from collections import Counter

import pytest

from tutorloop.metrics import episode_record
from tutorloop.viewer import ROLE_COLOURS, write_viewer

from unit.test_viewer import dialogue_episode

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_viewer_screenshot_is_not_blank(tmp_path):
    if CHROMIUM is None and os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed; .ci/run installs it in CI")
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    (tmp_path / "episodes.jsonl").write_text(json.dumps(episode_record(0, dialogue_episode())) + "\n")
    page = write_viewer(tmp_path, title="viewer check")
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=900,700", f"--screenshot={shot}", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    width, height, pixels = read_png(shot.read_bytes())
    assert (width, height) == (900, 700)
    colours = Counter(pixels)
    background, count = colours.most_common(1)[0]
    assert 1 - count / len(pixels) > 0.05  # more than a twentieth of the page is not background
    assert len(colours) > 50  # text is anti-aliased: a rendered page has many shades
    tutor_bubble = tuple(int(ROLE_COLOURS["tutor"][i:i + 2], 16) for i in (1, 3, 5))
    assert colours[tutor_bubble] > 1000  # the tutor's bubbles are there in their colour


def read_png(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """8-bit RGB or RGBA PNG -> (width, height, RGB pixels), with the five scanline filters undone."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour_type = header[:4]
    assert depth == 8 and colour_type in (2, 6), "expected 8-bit RGB(A)"
    channels = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(idat), width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, up_left = previous[i], previous[i - channels] if i >= channels else 0
            line[i] = (line[i] + _predict(kind, left, up, up_left)) & 0xFF
        rows.append(line)
        previous = line
    return width, height, [tuple(row[x:x + 3]) for row in rows for x in range(0, stride, channels)]


def _predict(kind: int, a: int, b: int, c: int) -> int:
    if kind == 0:
        return 0
    if kind == 1:
        return a
    if kind == 2:
        return b
    if kind == 3:
        return (a + b) // 2
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)
