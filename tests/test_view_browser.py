"""The interactive view in a real browser: Debian's Chromium, headless, offline (file://).

The page's test hook (``#test=expand:BLOCK,hover:NODE,...``) runs the steps a reader would
and writes what it saw into ``<pre id="archcomp-test">``, which ``--dump-dom`` returns;
``--enable-logging=stderr`` shows every console message and uncaught error. scripts/setup.sh
installs Chromium (apt-get); where it is missing or cannot start, these tests skip and say so.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

import archcomp

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
pytestmark = [
    pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is missing"),
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Chromium is not installed (scripts/setup.sh installs it: apt-get install chromium)",
    ),
]
WINDOW = (1280, 800)


def chromium(url: str, profile: Path, *flags: str) -> tuple[str, str]:
    """Run headless Chromium on ``url``; its stdout and stderr."""
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--virtual-time-budget=5000",
        "--enable-logging=stderr",
        "--v=0",
        *flags,
        url,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except OSError as exc:
        pytest.skip(f"Chromium cannot run here: {exc}")
    except subprocess.TimeoutExpired:  # the page hangs, e.g. on an injected alert()
        pytest.fail(f"Chromium ran past 120 s on {url}")
    if proc.returncode != 0 and not proc.stdout:
        pytest.skip(f"Chromium cannot run here: {proc.stderr.strip()[-300:]}")
    return proc.stdout, proc.stderr


def page_messages(stderr: str, page: Path) -> list[str]:
    """Console messages and uncaught errors of the page (Chromium's own log lines aside)."""
    return [
        line
        for line in stderr.splitlines()
        if ":CONSOLE" in line and (page.name in line or "Uncaught" in line)
    ]


def run_hook(page: Path, steps: str, profile: Path) -> dict:
    dom, err = chromium(f"{page.as_uri()}#test={steps}", profile, "--dump-dom")
    assert page_messages(err, page) == []  # no console output, no uncaught error
    m = re.search(r'<pre id="archcomp-test">(.*?)</pre>', dom, re.S)
    assert m is not None and m.group(1), "the page's script did not run"
    return json.loads(html.unescape(m.group(1)))


@pytest.fixture(scope="module")
def llama_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("view") / "llama.html"
    archcomp.view("llama").save(out)
    return out


def test_llama_page_opens_a_decoder_layer_in_place_and_shows_a_nodes_shape(
    llama_page: Path, tmp_path: Path
) -> None:
    seen = run_hook(
        llama_page,
        "hover:layers.0,expand:llama_block,hover:layers.0.self_attn,search:down_proj,"
        "close:llama_block",
        tmp_path / "profile",
    )
    assert seen["errors"] == []
    closed, opened, hover, search, closed_again = seen["steps"]
    assert all(s["ok"] for s in seen["steps"]), seen["steps"]
    assert closed["state"] == [] and "block llama_block" in closed["details"]
    assert opened["state"] == ["llama_block"] and opened["boxes"] > closed["boxes"] + 3
    assert "layers.0.self_attn" in seen["boxes"] and "layers.0.mlp.down_proj" in seen["boxes"]
    # The details: op, symbolic shape, shape at the summary's dims, and the spec line.
    text = hover["details"]
    assert "multi_head_attention" in text and "num_kv_heads8" in text
    assert "shape[B, T, 4096]" in text and "[1, 8192, 4096]" in text
    assert re.search(r"sourcespecs/blocks/llama\.yaml:\d+", text)  # not an absolute path
    assert search["details"].startswith("down_proj")
    # Closing the layer closes what was opened inside it: back to the first figure.
    assert "llama_block" in search["state"] and closed_again["state"] == []
    assert closed_again["boxes"] == closed["boxes"]


def test_clicking_a_decoder_layer_opens_it_where_it_was(llama_page: Path, tmp_path: Path) -> None:
    seen = run_hook(llama_page, "click:layers.0", tmp_path / "profile")
    (click,) = seen["steps"]
    assert click["ok"] and click["state"] == ["llama_block"] and seen["errors"] == []
    assert click["extra"]["moved"] <= 2  # the opened frame is centred where the box was


def test_a_repeats_frame_opens_to_its_copies_and_folds_back(
    llama_page: Path, tmp_path: Path
) -> None:
    """Clicking the "N×" frame around the closed decoder layer shows all 32 layers, each a
    box with its own details; clicking the frame again folds them back into copy 0."""
    seen = run_hook(llama_page, "frame:layers,hover:layers.5,frame:layers", tmp_path / "p")
    unrolled, hover, folded = seen["steps"]
    assert all(s["ok"] for s in seen["steps"]) and seen["errors"] == [], seen["steps"]
    assert unrolled["state"] == ["copies:layers"] and unrolled["boxes"] >= 32
    assert "copy 5 of 32" in hover["details"] and "click to open" not in hover["details"]
    assert folded["state"] == [] and folded["boxes"] == unrolled["boxes"] - 31


def test_llama_screenshot_has_the_window_size_and_is_not_blank(
    llama_page: Path, tmp_path: Path
) -> None:
    shot = tmp_path / "llama.png"
    chromium(
        f"{llama_page.as_uri()}#test=expand:llama_block", tmp_path / "p", f"--screenshot={shot}"
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == WINDOW
    assert ink(data) > 0.01  # a blank page is ~0: its filtered rows are all zeros


def ink(png: bytes) -> float:
    """The share of non-zero bytes in a PNG's filtered scanlines: 0 for a one-colour image
    (each row is "same as the row above"), well above 0 for a figure with boxes and text."""
    pos, chunks = 8, []
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        if png[pos + 4 : pos + 8] == b"IDAT":
            chunks.append(png[pos + 8 : pos + 8 + length])
        pos += 12 + length
    raw = zlib.decompress(b"".join(chunks))
    return 1 - raw.count(0) / len(raw)


def test_hostile_labels_reach_the_page_as_text(tmp_path: Path) -> None:
    spec = tmp_path / "evil.yaml"
    label = "</script><script>document.title='pwned'</script><img src=x onerror=alert(1)>"
    spec.write_text(
        "archcomp: 1\nname: evil\ninputs: {x: [B, 4]}\nnodes:\n"
        f'  - {{id: fc, op: linear, out_features: 2, label: "{label}"}}\n'
        "outputs: fc\n"
    )
    page = tmp_path / "evil.html"
    archcomp.view(spec).save(page)
    seen = run_hook(page, "hover:fc", tmp_path / "profile")
    assert seen["errors"] == [] and seen["steps"][0]["ok"]
    assert seen["steps"][0]["details"].startswith(label)  # shown as the text it is
