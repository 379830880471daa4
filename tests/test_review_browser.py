"""The review page in headless Chromium: keyboard, undo, a bulk range, the manifest on disk.

REVIEW_SCREENSHOT=docs/review.png also writes the screenshot the README shows.
"""

import os

import pytest
from PIL import Image

from pipeline import paths
from tests.browser import chrome, needs_chromium, wait_for
from tests.conftest import ROOT
from tests.test_review_api import make_dataset, rows, start_review

pytestmark = needs_chromium


@pytest.fixture
def server(tmp_path):
    data = make_dataset(tmp_path, count=30)
    proc, url = start_review(tmp_path)
    try:
        yield url, tmp_path, data
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def browser():
    driver = chrome("1280,880")
    try:
        yield driver
    finally:
        driver.quit()


def test_keyboard_undo_and_bulk_range_reach_the_manifest(server, browser, tmp_path_factory):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, root, data = server
    ids = data["ids"]
    browser.get(url)
    wait_for(lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready"), "the page")

    def card(image_id: str):
        return browser.find_element(By.CSS_SELECTOR, f'.card[data-id="{image_id}"]')

    def classes(image_id: str) -> set[str]:
        return set(card(image_id).get_attribute("class").split())

    def count(name: str) -> str:
        return browser.find_element(By.ID, f"n-{name}").text

    keys = ActionChains(browser)
    assert "focus" in classes(ids[0])
    keys.send_keys("a").perform()  # accept ids[0], focus moves on
    keys.send_keys("r").perform()  # reject ids[1]
    keys.send_keys("a").perform()  # accept ids[2] ...
    keys.send_keys("u").perform()  # ... and undo it
    # The page sends its requests one after another; the undo's reply comes last. Waiting for it
    # first means the disk check below cannot pass at the moment between "r" and the second "a"
    # (seen on a loaded machine).
    wait_for(lambda: "accept" not in classes(ids[2]), "the undo on the page")
    wait_for(lambda: rows(root) == {ids[0]: "accept", ids[1]: "reject"}, "keyboard decisions on disk")
    wait_for(lambda: "accept" in classes(ids[0]) and "reject" in classes(ids[1]), "the decisions on the page")

    # Click the first of a range, shift-click its last, reject them all at once.
    card(ids[4]).click()
    ActionChains(browser).key_down(Keys.SHIFT).click(card(ids[7])).key_up(Keys.SHIFT).perform()
    assert browser.find_element(By.ID, "n-selected").text == "4 selected"
    browser.find_element(By.ID, "bulk-reject").click()
    expected = {ids[0]: "accept", ids[1]: "reject"} | dict.fromkeys(ids[4:8], "reject")
    wait_for(lambda: rows(root) == expected, "the bulk rejection on disk")
    wait_for(lambda: count("reject") == "5", "the counters")
    assert count("accept") == "1" and count("pending") == str(len(ids) - 6)
    assert all("reject" in classes(i) for i in ids[4:8])

    # The detail view of a duplicate group: its members, sizes and source URL.
    ActionChains(browser).click(card(data["kept"])).perform()
    group = browser.find_element(By.ID, "group")
    wait_for(lambda: data["member"] in group.text, "the group's members in the detail view")
    facts = browser.find_element(By.ID, "facts").text
    assert "synthetic://" in facts and " × " in facts
    assert "licence unknown" in facts.replace("\n", " ")  # synthetic images carry no licence
    wait_for(
        lambda: browser.execute_script("return document.getElementById('preview').naturalWidth") > 0,
        "the large preview",
    )
    loaded = browser.execute_script(
        "return [...document.querySelectorAll('.card img')].filter(i => i.complete && i.naturalWidth).length"
    )
    assert loaded >= 6, "thumbnails load"
    keys.send_keys("?").perform()
    assert browser.find_element(By.ID, "legend").is_displayed()
    keys.send_keys(Keys.ESCAPE).perform()
    assert not browser.find_element(By.ID, "legend").is_displayed()

    shot = tmp_path_factory.mktemp("shot") / "review.png"
    browser.save_screenshot(str(shot))
    with Image.open(shot) as img:
        assert img.width >= 1000 and img.height >= 600
    if os.environ.get("REVIEW_SCREENSHOT"):
        with Image.open(shot) as img:
            img.convert("RGB").quantize(256).save(ROOT / os.environ["REVIEW_SCREENSHOT"], optimize=True)
    assert not list((root / paths.MANIFEST).parent.glob(".*.tmp")), "no temp files left by atomic writes"
