"""A day of review in real headless Chromium: what used to hurt, driven with trusted key events.

- a held key (auto-repeat, sent through the DevTools protocol as trusted events) decides one sample;
  a double press decides once; nothing is decided on the completion screen; a sample whose image
  failed to load cannot be decided; the note box starts empty on every sample and after a conflict;
- a fix being typed survives an expired session (draft restored after logging in again) and is saved;
- flags are grouped by phrase and sorted, clicking one shows its mask and phrase, the caption is on
  screen without scrolling, the panel scrolls from the keyboard, a mask under the pointer brings its
  phrase into view, and the mask picker is searched by typing;
- phrases are decided one by one with the keyboard, the sample is decided when all are, undo (u)
  takes it back; lead-only controls are hidden from annotators.

Skips without Chromium unless GEOPIXELD_REQUIRE_BROWSER=1; with GEOPIXELD_REVIEW_TEST_DB the server
keeps its decisions in that PostgreSQL database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from annotations.export import load_decisions, load_events

pytestmark = pytest.mark.browser

D1, D2, D3, D4, D5 = (f"D{i}_0_400_0_400" for i in range(1, 6))


@pytest.fixture
def day_data(tmp_path: Path, tools: Any, isaid_tile: Any) -> Path:
    """Five flagged 400x400 tiles from the iSAID sample: D1 has three phrases and 153 flags tied to
    phrases (the describe stage's new flag fields); D5's image goes missing."""
    phrase, spec = tools.Phrase, tools.TileSpec
    ship = phrase("large ship", (20, 20, 120, 80), category="ship")
    harbor = phrase("harbor", (200, 40, 380, 200), category="harbor", instance_ids=[5])
    car = phrase("white car", (250, 300, 290, 330), category="small-vehicle", instance_ids=[6])
    many = [(f"tiny_{k:03d}", "info", f"detail {k}", 0, None) for k in range(150)]
    specs = [
        spec(
            D1,
            ["A harbour. The ", ship, " is moored by the ", harbor, ". A ", car, " waits on the quay."],
            [
                *many,
                ("category_doubt", "error", "harbor may be a pier", 1, [5]),
                ("short", "info", "caption is short", None, None),
                ("size_off", "warning", "the car looks large", 2, [6]),
            ],
            size=400,
        ),
        spec(
            D2,
            ["Two ", phrase("boats", (10, 300, 90, 380), kind="cluster"), " float."],
            [("count", "error", "x")],
            400,
        ),
        spec(
            D3, ["A ", phrase("road", (0, 150, 400, 190), category="road"), "."], [("w", "warning", "x")], 400
        ),
        spec(D4, ["A ", phrase("tree", (5, 5, 30, 30), category="tree"), "."], [("i", "info", "x")], 400),
        spec(D5, ["A ", phrase("pool", (50, 50, 90, 90), category="pool"), "."], [("j", "info", "x")], 400),
    ]
    return tools.write_dataset(tmp_path / "data", specs, image=isaid_tile)


class Day:
    """The running server, its data and database, and helpers to drive it."""

    def __init__(self, url: str, data: Path, db: str | None, tools: Any) -> None:
        self.url, self.data, self.db, self.tools = url, data, db, tools

    def events(self, tile_id: str | None = None) -> list[dict[str, Any]]:
        rows = load_events(self.data, self.db).to_pylist()
        return [e for e in rows if tile_id is None or e["tile_id"] == tile_id]

    def decisions(self) -> dict[str, dict[str, Any]]:
        return {r["tile_id"]: r for r in load_decisions(self.data, self.db).to_pylist()}

    def engine(self) -> sa.Engine:
        from annotations.db import default_db_url

        return sa.create_engine(self.db or default_db_url(self.data))

    def api(self, name: str) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=30)
        login = client.post("/api/login", json={"name": name, "password": self.tools.PASSWORD})
        assert login.status_code == 200, login.text
        client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
        return client


def _add_day_users(day_data: Path, tools: Any, db: str | None) -> list[str]:
    """Alice and Bob (annotators) and Lena (lead); returns the ``--db`` arguments for the server."""
    db_args = ["--db", db] if db else []
    for name, role in (("alice", "annotator"), ("bob", "annotator"), ("lena", "lead")):
        tools.cli(
            "add-user",
            name,
            "--role",
            role,
            "--data",
            str(day_data),
            *db_args,
            "--password-stdin",
            stdin=f"{tools.PASSWORD}\n",
        )
    return db_args


@pytest.fixture
def day(day_data: Path, tools: Any) -> Iterator[Day]:
    db = tools.review_db_url()
    db_args = _add_day_users(day_data, tools, db)
    with tools.serve(day_data, "--spot-check-rate", "0", *db_args) as (url, _process):
        yield Day(url, day_data, db, tools)


def wait(driver: Any, condition: Any, message: Any, timeout: float = 15.0) -> Any:
    """Wait for ``condition``; ``message`` (a string, or a function of the driver for the state at the
    time of the failure) explains a timeout."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout).until(condition)
    except TimeoutException as exc:
        raise AssertionError(message(driver) if callable(message) else message) from exc


def body(driver: Any, key: str) -> str | None:
    return driver.execute_script(f"return document.body.dataset.{key} || null")


BANNER_TEXT = "return document.getElementById('banner').textContent"


def wait_ready(driver: Any, tile_id: str) -> None:
    """Wait until ``tile_id`` is on screen with its image and decisions are enabled."""
    wait(
        driver,
        lambda b: body(b, "rendered") == tile_id and body(b, "ready") == "true",
        lambda b: (
            f"{tile_id} not ready (showing {body(b, 'rendered')}, ready {body(b, 'ready')}, image ok "
            f"{body(b, 'imageOk')}, banner {b.execute_script(BANNER_TEXT)!r}, state {b.execute_script('return window.__gpxState()')})"
        ),
    )


def login(driver: Any, day: Day, name: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(day.url + "/login")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(day.tools.PASSWORD + Keys.ENTER)
    wait(driver, lambda b: not b.current_url.endswith("/login"), "login did not leave the login page")


def press(driver: Any, *keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    chain = ActionChains(driver)
    for key in keys:
        chain.send_keys(key)
    chain.perform()


def trusted_key(driver: Any, char: str, *, repeat: bool = False, up: bool = False) -> None:
    """A trusted key event through the DevTools protocol (``repeat``: an auto-repeat, as a held key sends)."""
    code = ord(char.upper())
    event = {
        "type": "keyUp" if up else "keyDown",
        "key": char,
        "code": f"Key{char.upper()}",
        "windowsVirtualKeyCode": code,
        "nativeVirtualKeyCode": code,
        "autoRepeat": repeat,
    }
    if not up:
        event.update(text=char, unmodifiedText=char)
    driver.execute_cdp_cmd("Input.dispatchKeyEvent", event)


def decided_actions(day: Day, tile_id: str) -> list[str]:
    return [e["action"] for e in day.events(tile_id) if e["action"] not in ("login", "logout")]


def test_one_key_press_is_one_decision(day: Day, driver: Any) -> None:
    from selenium.webdriver.common.by import By

    image = day.data / "tiles" / f"{D5}.png"  # D5's image goes missing (before anything could cache it)
    hidden = image.with_suffix(".gone")
    image.rename(hidden)
    login(driver, day, "alice")
    wait_ready(driver, D1)
    # Holding `a`: one press and a burst of auto-repeats; one sample is accepted.
    trusted_key(driver, "a")
    for _ in range(12):
        trusted_key(driver, "a", repeat=True)
    trusted_key(driver, "a", up=True)
    wait_ready(driver, D2)
    # A double press 50 ms apart (two separate presses): the second lands while the first is in flight
    # or while the next sample has been on screen for less than the page's minimum (250 ms).
    trusted_key(driver, "a")
    trusted_key(driver, "a", up=True)
    driver.execute_script("return new Promise((r) => setTimeout(r, 50))")
    trusted_key(driver, "a")
    trusted_key(driver, "a", up=True)
    wait_ready(driver, D3)
    assert decided_actions(day, D1) == ["accept"]
    assert decided_actions(day, D2) == ["accept"]
    assert day.decisions()[D2]["revision"] == 1
    assert decided_actions(day, D3) == []
    # The note box is per sample: typed here, saved with this decision, empty on the next sample.
    note = driver.find_element(By.ID, "note")
    assert note.get_attribute("value") == ""
    note.send_keys("road is a track")
    driver.execute_script("document.activeElement.blur()")
    press(driver, "r")
    wait_ready(driver, D4)
    assert driver.find_element(By.ID, "note").get_attribute("value") == ""
    assert day.decisions()[D3]["note"] == "road is a track"
    press(driver, "a")
    # D5's image is gone: it is shown with an error, and nothing can be decided on it.
    try:
        wait(driver, lambda b: body(b, "rendered") == D5, "D5 was not shown")
        assert body(driver, "ready") == "false" and body(driver, "imageOk") == "false"
        assert driver.find_element(By.ID, "btn-accept").get_attribute("disabled") is not None
        assert "could not be loaded" in driver.find_element(By.ID, "banner").text
        press(driver, "a")
        press(driver, "r")
        assert decided_actions(day, D5) == []
    finally:
        hidden.rename(image)
    driver.find_element(By.CSS_SELECTOR, "#banner button").click()  # Retry
    wait_ready(driver, D5)
    press(driver, "a")
    # The completion screen: nothing to decide, whatever is pressed.
    wait(driver, lambda b: body(b, "rendered") == "__done__", "no completion screen")
    before = len(day.events())
    for _ in range(3):
        press(driver, "a")
        press(driver, "r")
        press(driver, "e")
    assert driver.find_element(By.ID, "btn-accept").get_attribute("disabled") is not None
    assert len(day.events()) == before
    # u takes back the last decision and shows that sample again.
    press(driver, "u")
    wait_ready(driver, D5)
    assert D5 not in {t for t, r in day.decisions().items() if r["review_status"] != "unreviewed"}
    assert decided_actions(day, D5) == ["accept", "undo"]
    errors = [
        e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "/image/tile" not in e["message"]
    ]
    assert errors == []


def test_conflict_clears_the_note_and_a_draft_survives_an_expired_session(day: Day, driver: Any) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from annotations.db import sessions

    login(driver, day, "alice")
    wait_ready(driver, D1)
    bob = day.api("bob")  # Bob decides Alice's sample behind her back, with his own note
    response = bob.post(
        f"/api/samples/{D1}/decision", json={"action": "reject", "base_revision": 0, "note": "bob's"}
    )
    bob.close()
    assert response.status_code == 200
    driver.find_element(By.ID, "note").send_keys("mine")
    driver.execute_script("document.activeElement.blur()")
    press(driver, "a")
    wait(driver, lambda b: "Conflict" in b.find_element(By.ID, "banner").text, "no conflict banner")
    show_theirs = [
        b for b in driver.find_elements(By.CSS_SELECTOR, "#banner button") if b.text == "Show theirs"
    ][0]
    show_theirs.click()
    wait_ready(driver, D1)
    assert driver.find_element(By.ID, "note").get_attribute("value") == ""  # not Bob's, not stale
    assert "note by bob: bob's" in driver.find_element(By.ID, "sample-head").text
    press(driver, "j")
    wait_ready(driver, D2)
    # A fix is being typed when the session runs out.
    press(driver, "e")
    box = wait(driver, lambda b: b.find_element(By.CSS_SELECTOR, "#phrases .phrase-input"), "no phrase box")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("three small ferries")
    with day.engine().begin() as conn:
        conn.execute(sa.delete(sessions))
    ActionChains(driver).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
    wait(
        driver, lambda b: b.current_url.endswith("/login"), "an expired session did not go to the login page"
    )
    login(driver, day, "alice")
    wait(driver, lambda b: body(b, "rendered") == D2, "not back on the sample after logging in")
    assert "was restored" in driver.find_element(By.ID, "banner").text
    restored = driver.find_element(By.CSS_SELECTOR, "#phrases .phrase-input").get_attribute("value")
    assert restored == "three small ferries"
    wait(
        driver,
        lambda b: "validates" in b.find_element(By.ID, "edit-status").text,
        "restored fix not validated",
    )
    wait(driver, lambda b: body(b, "ready") == "true", "restored sample not ready")
    ActionChains(driver).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
    wait_ready(driver, D3)
    fixed = day.decisions()[D2]
    assert (
        fixed["review_status"] == "fixed"
        and fixed["gcg_caption"] == "Two <p> three small ferries </p> [SEG] float."
    )
    assert (
        driver.execute_script("return Object.keys(localStorage).filter((k) => k.startsWith('gpx-draft:'))")
        == []
    )


def test_flags_by_phrase_linked_to_masks_keyboard_scroll_and_mask_search(day: Day, driver: Any) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.set_window_size(1400, 800)
    login(driver, day, "alice")
    wait_ready(driver, D1)
    # The caption is on screen without scrolling past 153 flags.
    top = driver.execute_script("return document.getElementById('caption').getBoundingClientRect().top")
    assert top < driver.execute_script("return window.innerHeight") / 2
    assert driver.find_element(By.CSS_SELECTOR, ".flag-summary").text == "1 error · 1 warning · 151 info"
    titles = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".flag-group-title")]
    assert titles == ["Sample", "Phrase 2 “harbor”", "Phrase 3 “white car”", "Phrase 1 “large ship”"]
    # Clicking the error flag pins the harbor's mask and brings its phrase into view.
    error_flag = driver.find_element(By.CSS_SELECTOR, ".flag.sev-error")
    driver.execute_script("arguments[0].scrollIntoView()", error_flag)
    error_flag.click()
    wait(driver, lambda b: b.find_element(By.ID, "hover-info").text.startswith("#2 "), "mask 2 not shown")
    assert "pinned" in driver.find_element(By.ID, "hover-info").text
    harbor = driver.find_element(By.CSS_SELECTOR, '#caption .phrase[data-ref="1"]')
    assert "flash" in harbor.get_attribute("class")
    assert driver.execute_script(
        "const r = arguments[0].getBoundingClientRect(), p = document.getElementById('panel').getBoundingClientRect();"
        "return r.top >= p.top && r.bottom <= p.bottom",
        harbor,
    )
    press(driver, Keys.ESCAPE)
    # The panel scrolls from the keyboard.
    driver.execute_script("document.activeElement.blur()")
    press(driver, Keys.PAGE_DOWN)
    wait(
        driver,
        lambda b: b.execute_script("return document.getElementById('panel').scrollTop") > 0,
        "PageDown",
    )
    press(driver, Keys.END)
    scrolled = driver.execute_script("return document.getElementById('panel').scrollTop")
    press(driver, Keys.HOME)
    wait(driver, lambda b: b.execute_script("return document.getElementById('panel').scrollTop") == 0, "Home")
    assert scrolled > 0
    # With the panel scrolled to the bottom, the pointer on the car's mask brings its phrase into view.
    press(driver, Keys.END)
    car = driver.find_element(By.CSS_SELECTOR, '#caption .phrase[data-ref="2"]')
    in_view = (
        "const r = arguments[0].getBoundingClientRect(), p = document.getElementById('panel').getBoundingClientRect();"
        "return r.top >= p.top && r.bottom <= p.bottom"
    )
    assert not driver.execute_script(in_view, car)
    viewport = driver.find_element(By.ID, "viewport")
    x, y = driver.execute_script(
        "const s = document.getElementById('stage').getBoundingClientRect(), v = arguments[0].getBoundingClientRect();"
        "return [s.left + s.width * 270 / 400 - (v.left + v.width / 2), s.top + s.height * 315 / 400 - (v.top + v.height / 2)]",
        viewport,
    )
    ActionChains(driver).move_to_element_with_offset(viewport, int(x), int(y)).perform()
    wait(driver, lambda b: b.execute_script(in_view, car), "the car's phrase did not come into view")
    assert driver.find_element(By.ID, "hover-info").text.startswith("#3 ")
    # The mask picker is searched by typing: a number, or words of a phrase or category.
    press(driver, "e")
    picker = wait(
        driver,
        lambda b: b.find_element(By.CSS_SELECTOR, '#phrases [aria-label="mask of phrase 1"]'),
        "no picker",
    )
    assert picker.get_attribute("list") == "mask-options"
    assert len(driver.find_elements(By.CSS_SELECTOR, "#mask-options option")) == 3
    picker.send_keys(Keys.CONTROL, "a")
    picker.send_keys("#3" + Keys.TAB)
    wait(
        driver,
        lambda b: b.find_element(By.CSS_SELECTOR, "#phrases .phrase-row .chip").text == "3",
        "phrase 1 not re-linked to mask 3",
    )
    picker = driver.find_element(By.CSS_SELECTOR, '#phrases [aria-label="mask of phrase 1"]')
    picker.send_keys(Keys.CONTROL, "a")
    picker.send_keys("harb" + Keys.TAB)
    wait(
        driver,
        lambda b: b.find_element(By.CSS_SELECTOR, "#phrases .phrase-row .chip").text == "2",
        "phrase 1 not re-linked to the harbor mask by words",
    )
    # Two phrases on one mask is allowed, with a warning.
    wait(
        driver,
        lambda b: "mask_duplicate" in b.find_element(By.ID, "edit-status").text,
        "no duplicate warning",
    )
    wait(driver, lambda b: body(b, "ready") == "true", "sample not ready")
    ActionChains(driver).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
    wait_ready(driver, D2)
    assert day.decisions()[D1]["masks"][0] == day.decisions()[D1]["masks"][1]  # phrases 1 and 2: the harbor


def test_phrase_decisions_by_keyboard_undo_and_roles(day: Day, driver: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    login(driver, day, "alice")
    wait_ready(driver, D1)
    assert not driver.find_element(By.ID, "btn-bulk").is_displayed()  # leads only
    assert not driver.find_element(By.ID, "btn-stats").is_displayed()
    press(driver, "p")
    wait(
        driver,
        lambda b: b.find_elements(By.CSS_SELECTOR, '#phrases .phrase-row.cursor[data-phrase="0"]'),
        "no cursor",
    )
    press(driver, "A")
    wait(
        driver,
        lambda b: b.find_elements(By.CSS_SELECTOR, '#phrases .phrase-row.cursor[data-phrase="1"]'),
        "cursor stuck",
    )
    assert "accepted" in driver.find_element(By.CSS_SELECTOR, '#phrases .phrase-row[data-phrase="0"]').text
    press(driver, "R")
    wait(
        driver,
        lambda b: b.find_elements(By.CSS_SELECTOR, '#phrases .phrase-row.cursor[data-phrase="2"]'),
        "cursor stuck",
    )
    press(driver, "E")
    box = wait(
        driver,
        lambda b: b.find_element(By.CSS_SELECTOR, '#phrases [aria-label="new words of phrase 3"]'),
        "no box",
    )
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("small red car" + Keys.ENTER)
    wait_ready(driver, D2)
    fixed = day.decisions()[D1]
    assert fixed["review_status"] == "fixed"
    assert fixed["gcg_caption"] == (
        "A harbour. The <p> large ship </p> [SEG] is moored by the harbor. A <p> small red car </p> [SEG] waits on the quay."
    )
    assert decided_actions(day, D1) == ["phrase_accept", "phrase_reject", "phrase_fix", "phrases_done"]
    # u: the last phrase and the sample decision it made are taken back together.
    press(driver, "u")
    wait_ready(driver, D1)
    assert day.decisions()[D1]["review_status"] == "unreviewed"
    statuses = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#phrases .phrase-status")]
    assert statuses == ["✓ accepted", "✗ rejected"]
    # A lead sees the lead controls.
    driver.find_element(By.ID, "btn-logout").click()
    wait(driver, lambda b: b.current_url.endswith("/login"), "logout")
    login(driver, day, "lena")
    wait(driver, lambda b: body(b, "role") == "lead", "lead role not applied")
    assert driver.find_element(By.ID, "btn-bulk").is_displayed()
    # A lead manages users from the page.
    driver.find_element(By.ID, "btn-users").click()
    wait(
        driver,
        lambda b: b.find_elements(By.CSS_SELECTOR, '#users-body tr[data-user="alice"]'),
        "no user list",
    )
    driver.find_element(By.ID, "new-user-name").send_keys("dora")
    driver.find_element(By.ID, "new-user-password").send_keys("a long passphrase" + Keys.ENTER)
    wait(
        driver,
        lambda b: b.find_elements(By.CSS_SELECTOR, '#users-body tr[data-user="dora"]'),
        "dora not added",
    )
    assert "dora added (annotator)" in driver.find_element(By.ID, "users-result").text
    driver.find_element(By.CSS_SELECTOR, '#users-body tr[data-user="alice"] button').click()  # make lead
    role_of_alice = (
        "return document.querySelector('#users-body tr[data-user=\"alice\"] td:nth-child(2)')?.textContent"
    )
    wait(driver, lambda b: b.execute_script(role_of_alice) == "lead", "alice not made a lead")
    with httpx.Client(base_url=day.url, timeout=30) as client:
        login_dora = client.post("/api/login", json={"name": "dora", "password": "a long passphrase"})
        assert login_dora.status_code == 200 and login_dora.json()["role"] == "annotator"


def _tile_offset(driver: Any, x: float, y: float) -> tuple[int, int]:
    """Offset from the viewport's centre of tile pixel (x, y), for ActionChains."""
    from selenium.webdriver.common.by import By

    viewport = driver.find_element(By.ID, "viewport")
    dx, dy = driver.execute_script(
        "const s = document.getElementById('stage').getBoundingClientRect(), v = arguments[0].getBoundingClientRect();"
        "const k = s.width / 400;"
        "return [s.left + arguments[1] * k - (v.left + v.width / 2), s.top + arguments[2] * k - (v.top + v.height / 2)]",
        viewport,
        x,
        y,
    )
    return round(dx), round(dy)


def test_mask_drawing_round_trip_into_the_export(day: Day, driver: Any) -> None:
    import numpy as np
    from pycocotools import mask as mask_utils
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    login(driver, day, "alice")
    wait_ready(driver, D1)
    press(driver, "e")
    viewport = driver.find_element(By.ID, "viewport")
    # Correct the car's mask with the polygon tool: a 60 x 50 rectangle, corners clicked on the tile.
    driver.find_element(By.CSS_SELECTOR, '[aria-label="draw mask of phrase 3"]').click()
    wait(
        driver,
        lambda b: "Drawing the mask of phrase 3" in b.find_element(By.ID, "banner").text,
        "no drawing banner",
    )
    press(driver, "g")
    for x, y in ((240, 290), (300, 290), (300, 340), (240, 340)):
        dx, dy = _tile_offset(driver, x, y)
        ActionChains(driver).move_to_element_with_offset(viewport, dx, dy).click().perform()
    press(driver, Keys.ENTER)  # closes the polygon
    press(driver, Keys.ENTER)  # done
    wait(
        driver,
        lambda b: b.find_element(By.CSS_SELECTOR, '#phrases .phrase-row[data-phrase="2"] .chip').text == "4",
        "phrase 3 not linked to its drawn mask",
    )
    # A missed object: brush strokes, then its words.
    driver.find_element(By.ID, "btn-add-object").click()
    press(driver, "b")
    start, end = _tile_offset(driver, 100, 250), _tile_offset(driver, 160, 250)
    ActionChains(driver).move_to_element_with_offset(
        viewport, *start
    ).click_and_hold().move_to_element_with_offset(viewport, *end).release().perform()
    press(driver, Keys.ENTER)
    words = wait(
        driver,
        lambda b: b.find_element(By.CSS_SELECTOR, '[aria-label="words of the new object"]'),
        "no words box",
    )
    words.send_keys("blue boat" + Keys.ENTER)
    wait(
        driver,
        lambda b: "blue boat" in b.find_element(By.ID, "caption").text,
        "new object not in the caption",
    )
    wait(
        driver, lambda b: "validates" in b.find_element(By.ID, "edit-status").text, "drawn fix not validated"
    )
    wait(driver, lambda b: body(b, "ready") == "true", "sample not ready")
    ActionChains(driver).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
    wait_ready(driver, D2)
    fixed = day.decisions()[D1]
    assert fixed["review_status"] == "fixed" and fixed["gcg_caption"].endswith(" <p> blue boat </p> [SEG].")
    assert [p["text"] for p in fixed["phrases"]] == ["large ship", "harbor", "white car", "blue boat"]
    car = mask_utils.decode(
        {"size": fixed["masks"][2]["size"], "counts": fixed["masks"][2]["counts"].encode()}
    )
    ys, xs = np.nonzero(car)
    assert car.sum() == 60 * 50 and (xs.min(), xs.max(), ys.min(), ys.max()) == (240, 299, 290, 339)
    boat = mask_utils.decode(
        {"size": fixed["masks"][3]["size"], "counts": fixed["masks"][3]["counts"].encode()}
    )
    ys, xs = np.nonzero(boat)
    assert boat.sum() > 50 and xs.min() >= 90 and xs.max() <= 170 and ys.min() >= 240 and ys.max() <= 260
    # Opened again, the drawn masks are shown with the fix (mask numbers 4 and 5 on the tile).
    press(driver, "k")
    wait_ready(driver, D1)
    marks = {e.text for e in driver.find_elements(By.CSS_SELECTOR, "#labels .mark")}
    assert {"1", "2", "4", "5"} <= marks


@pytest.fixture
def double_day(day_data: Path, tools: Any) -> Iterator[Day]:
    """The day's data served in two-reviewer mode: every queued sample is reviewed twice, blind."""
    db = tools.review_db_url()
    db_args = _add_day_users(day_data, tools, db)
    args = ("--spot-check-rate", "0", "--double-review-rate", "1", *db_args)
    with tools.serve(day_data, *args) as (url, _process):
        yield Day(url, day_data, db, tools)


def logout(driver: Any) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "btn-logout").click()
    wait(driver, lambda b: b.current_url.endswith("/login"), "logout did not reach the login page")


def test_two_reviewers_blind_then_a_lead_adjudicates(double_day: Day, driver: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    day = double_day
    login(driver, day, "alice")
    wait_ready(driver, D1)
    assert "two reviewers (blind) · 0 of 2" in driver.find_element(By.ID, "sample-head").text
    press(driver, "a")
    wait_ready(driver, D2)
    assert day.decisions()[D1]["review_status"] == "unreviewed"  # one review is not a decision
    logout(driver)
    login(driver, day, "bob")
    wait_ready(driver, D1)
    head = driver.find_element(By.ID, "sample-head").text
    assert "1 of 2" in head and "alice" not in head
    wait(driver, lambda b: "Not reviewed yet" in b.find_element(By.ID, "history").text, "history not blind")
    press(driver, "r")  # Bob disagrees
    wait_ready(driver, D3)  # D2 stays with Alice, who holds it
    logout(driver)
    login(driver, day, "lena")
    wait(driver, lambda b: body(b, "role") == "lead", "lead role not applied")
    Select(driver.find_element(By.ID, "queue-filter")).select_by_value("adjudicate:1")
    wait_ready(driver, D1)
    lines = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#sample-head .review-line")]
    assert lines == ["alice: accepted", "bob: rejected"]
    press(driver, "r")
    wait(driver, lambda b: body(b, "rendered") == "__done__", "adjudication queue not emptied")
    assert day.decisions()[D1]["review_status"] == "rejected"
    actions = [e["action"] for e in day.events(D1)]
    assert actions == ["review_accept", "review_reject", "adjudication_opened", "adjudicate_reject"]
    from annotations.db import open_engine
    from annotations.double import agreement_report

    engine = open_engine(day.db or f"sqlite:///{day.data / 'review.sqlite'}")
    report = agreement_report(engine)
    engine.dispose()
    assert report["pairs"] == 1 and report["agreement"] == 0.0
