"""End to end in real headless Chromium: the real server as a subprocess, login, three flagged samples
reviewed with the keyboard (accept, reject, fix a phrase), a reload, and the fix still there.

Skips when Chromium, chromedriver or selenium is missing, unless GEOPIXELD_REQUIRE_BROWSER=1 (CI), where
a missing browser is a failure. Screenshots go to .artifacts/ at the repository root.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / ".artifacts"


@pytest.fixture
def browser_data(tmp_path: Path, tools: Any, isaid_tile: Any) -> Path:
    """Four flagged 800x800 tiles cut from the iSAID sample (the first one with HTML in its caption)
    and two unflagged ones."""
    phrase, spec = tools.Phrase, tools.TileSpec
    specs = [
        spec(
            "T1_0_800_0_800",
            [
                "A harbour seen from above. The ",
                phrase("large ship", (100, 100, 300, 200), category="ship"),
                " is moored at the pier. ",
                tools.XSS_TEXT,
            ],
            [("markup", "error", f"caption contains markup {tools.XSS_TEXT}")],
            size=800,
        ),
        spec(
            "T2_0_800_0_800",
            [
                "Two ",
                phrase("small boats", (350, 420, 460, 520), kind="cluster", instance_ids=[3, 4]),
                " float near the ",
                phrase("harbor", (500, 50, 780, 400), category="harbor", instance_ids=[5]),
                ".",
            ],
            [("count", "error", "3 boats counted, 2 described")],
            size=800,
        ),
        spec(
            "T3_0_800_0_800",
            [
                "The ",
                phrase("white car", (200, 300, 240, 330)),
                " is parked beside the ",
                phrase("truck", (400, 400, 480, 460), category="large-vehicle", instance_ids=[2]),
                ".",
            ],
            [("category", "warning", "truck may be a bus")],
            size=800,
        ),
        spec(
            "T4_0_800_0_800",
            ["An ", phrase("empty road", (0, 600, 800, 700), category="road"), "."],
            [("short", "info", "caption is short")],
            size=800,
        ),
        spec(
            "U1_0_800_0_800",
            ["A field with a ", phrase("tree", (10, 10, 60, 60), category="tree"), "."],
            size=800,
        ),
        spec(
            "U2_0_800_0_800",
            ["A field with a ", phrase("tree", (10, 10, 60, 60), category="tree"), "."],
            size=800,
        ),
    ]
    return tools.write_dataset(tmp_path / "data", specs, image=isaid_tile)


@pytest.fixture
def server(browser_data: Path, tools: Any) -> Iterator[str]:
    """The real review server (``python -m annotations.cli serve``) on a free port; stopped by PID.
    With ``GEOPIXELD_REVIEW_TEST_DB`` set it keeps its decisions in that PostgreSQL database."""
    db = tools.review_db_url()
    db_args = ["--db", db] if db else []
    tools.cli(
        "add-user",
        "alice",
        "--data",
        str(browser_data),
        *db_args,
        "--password-stdin",
        stdin=f"{tools.PASSWORD}\n",
    )
    with tools.serve(browser_data, "--spot-check-rate", "0", *db_args) as (url, _process):
        yield url


def _rendered(browser: Any) -> str | None:
    return browser.execute_script("return document.body.dataset.rendered || null")


def _wait_rendered(browser: Any, tile_id: str, timeout: float = 15.0) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, timeout).until(
        lambda b: _rendered(b) == tile_id, f"sample {tile_id} was not rendered (showing {_rendered(browser)})"
    )


def _keys(browser: Any, *keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    chain = ActionChains(browser)
    for key in keys:
        chain.send_keys(key)
    chain.perform()


def _screenshot(browser: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    browser.save_screenshot(str(path))
    return path


def test_review_three_samples_with_the_keyboard(
    server: str, driver: Any, browser_data: Path, tools: Any
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from annotations.export import load_decisions

    driver.get(server + "/")
    WebDriverWait(driver, 10).until(lambda b: b.current_url.endswith("/login"))
    driver.find_element(By.ID, "name").send_keys("alice")
    driver.find_element(By.ID, "password").send_keys(tools.PASSWORD + Keys.ENTER)

    # Sample 1 (error, HTML in the caption and flag): shown as text, never run.
    _wait_rendered(driver, "T1_0_800_0_800")
    rendered = driver.execute_script("return window.__gpxRendered")
    assert rendered["masks"] == 1 and rendered["sinceOpen"] > 0
    caption = driver.find_element(By.ID, "caption")
    assert tools.XSS_TEXT in caption.text
    assert caption.find_elements(By.CSS_SELECTOR, "script, img") == []
    assert tools.XSS_TEXT in driver.find_element(By.ID, "flags").text
    assert driver.execute_script("return window.__xss === undefined")
    assert "large ship" in driver.find_element(By.ID, "phrases").text
    assert driver.find_element(By.CSS_SELECTOR, "#labels .mark").text == "1"
    _screenshot(driver, "review_sample.png")
    _keys(driver, "a")

    # Sample 2: reject.
    _wait_rendered(driver, "T2_0_800_0_800")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#caption .phrase")) == 2
    _keys(driver, "r")

    # Sample 3: fix a phrase in place, then save with Ctrl+Enter.
    _wait_rendered(driver, "T3_0_800_0_800")
    _keys(driver, "e")
    first_phrase = WebDriverWait(driver, 5).until(
        lambda b: b.find_element(By.CSS_SELECTOR, "#phrases .phrase-input")
    )
    first_phrase.send_keys(Keys.CONTROL, "a")
    first_phrase.send_keys("red hatchback")
    first_phrase.send_keys(Keys.TAB)
    WebDriverWait(driver, 5).until(lambda b: "validates" in b.find_element(By.ID, "edit-status").text)
    assert "red hatchback" in driver.find_element(By.ID, "caption").text
    _screenshot(driver, "review_fix.png")
    ActionChains(driver).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
    _wait_rendered(driver, "T4_0_800_0_800")  # auto-advance

    # Reload: the page comes back on the same sample; k goes back to the fixed one.
    driver.refresh()
    _wait_rendered(driver, "T4_0_800_0_800")
    _keys(driver, "k")
    _wait_rendered(driver, "T3_0_800_0_800")
    phrases = driver.execute_script(
        "return [...document.querySelectorAll('#caption .phrase')].map((p) => p.firstChild.textContent)"
    )
    assert phrases == ["red hatchback", "truck"]
    assert driver.find_element(By.ID, "caption").text.startswith("The red hatchback")
    assert "fixed" in driver.find_element(By.ID, "sample-head").text
    WebDriverWait(driver, 5).until(lambda b: "fix by alice" in b.find_element(By.ID, "history").text.lower())
    shot = _screenshot(driver, "review_e2e.png")
    assert shot.stat().st_size > 10_000

    db = os.environ.get("GEOPIXELD_REVIEW_TEST_DB") or None
    status = {r["tile_id"]: r for r in load_decisions(browser_data, db).to_pylist()}
    assert [
        status[t]["review_status"]
        for t in ("T1_0_800_0_800", "T2_0_800_0_800", "T3_0_800_0_800", "T4_0_800_0_800")
    ] == ["accepted", "rejected", "fixed", "unreviewed"]
    fixed = status["T3_0_800_0_800"]
    assert fixed["reviewer"] == "alice"
    assert (
        fixed["gcg_caption"] == "The <p> red hatchback </p> [SEG] is parked beside the <p> truck </p> [SEG]."
    )
    assert [p["text"] for p in fixed["phrases"]] == ["red hatchback", "truck"]
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_browser_rle_decoding_matches_pycocotools(driver: Any, server: str) -> None:
    """static/rle.js against pycocotools and scipy: crops, areas, and outlines of known masks."""
    import numpy as np
    from pycocotools import mask as mask_utils
    from scipy.ndimage import binary_erosion

    from annotations.bench import ellipse_rle

    rng = np.random.default_rng(3)
    size = 300
    masks = []
    for _ in range(12):
        cx, cy = rng.uniform(60, 240, 2)
        a, b = rng.uniform(3, 50, 2)
        masks.append(ellipse_rle(size, float(cx), float(cy), float(a), float(b), float(rng.uniform(0, 3))))
    full = np.zeros((size, size), dtype=np.uint8, order="F")
    full[0:size, 100:103] = 1  # runs spanning whole columns
    full[150:160, 200:260] = 1
    masks.append({"size": [size, size], "counts": mask_utils.encode(full)["counts"].decode()})
    masks.append({"size": [size, size], "counts": mask_utils.encode(np.zeros_like(full))["counts"].decode()})
    driver.get(server + "/login")
    script = """
      const masks = arguments[0];
      const done = arguments[arguments.length - 1];
      import("/static/rle.js").then((rle) => done(masks.map((m) => {
        const d = rle.decodeMask(m);
        if (!d) return null;
        return { x0: d.x0, y0: d.y0, w: d.w, h: d.h, area: d.area, bits: Array.from(d.bits).join(""),
                 outline: Array.from(rle.outlineBits(d, 2)).join("") };
      }))).catch((e) => done(String(e)));
    """
    decoded = driver.execute_async_script(script, masks)
    assert isinstance(decoded, list), decoded
    assert decoded[-1] is None  # empty mask
    for mask, got in zip(masks[:-1], decoded[:-1], strict=True):
        array = mask_utils.decode({"size": mask["size"], "counts": mask["counts"].encode()}).astype(bool)
        ys, xs = np.nonzero(array)
        assert (got["x0"], got["y0"]) == (xs.min(), ys.min())
        assert (got["w"], got["h"]) == (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        crop = array[got["y0"] : got["y0"] + got["h"], got["x0"] : got["x0"] + got["w"]]
        assert got["area"] == array.sum()
        assert got["bits"] == "".join(crop.reshape(-1).astype(int).astype(str))
        expected_outline = crop & ~binary_erosion(crop, structure=np.ones((5, 5)), border_value=0)
        assert got["outline"] == "".join(expected_outline.reshape(-1).astype(int).astype(str))
