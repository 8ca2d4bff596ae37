"""The page of `charrnn serve`, in a real browser: Debian's chromium, headless, driven by
Selenium through Debian's chromedriver (Selenium is given both paths and downloads nothing).

A person's path: type a prime, press Generate, watch the text stream in; paste a text and
colour it by surprise. Screenshots are saved in pytest's temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from charrnn import load_model, rundir, use_config
from tests.serving import live_server, need

pytestmark = pytest.mark.browser

need("fastapi")
need("uvicorn")
webdriver = need("selenium.webdriver", "browser")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from charrnn.serve.app import create_app  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        message = f"{', '.join(missing)} missing (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests, but {message}; .ci/run installs them")
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1200,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def server(tiny_run):
    generator = load_model(str(tiny_run), "cpu", int8=True)
    app = create_app(
        generator, use_config.ServeConfig(max_length=1000), rundir.find_checkpoint(tiny_run)
    )
    with live_server(app) as url:
        yield url, generator


def set_range(driver, element_id: str, value) -> None:
    """Move a slider as a person would leave it: the value, then its input event."""
    driver.execute_script(
        "const e = document.getElementById(arguments[0]); e.value = arguments[1];"
        "e.dispatchEvent(new Event('input'));",
        element_id,
        str(value),
    )


def test_generate_streams_the_text_in(browser, server, tmp_path):
    url, generator = server
    browser.get(url + "/")
    prime = browser.find_element(By.ID, "prime")
    prime.clear()
    prime.send_keys("JULIET:")
    set_range(browser, "length", 300)
    set_range(browser, "temperature", 0.6)
    browser.find_element(By.ID, "seed").send_keys("7")
    browser.find_element(By.ID, "generate").click()
    output = browser.find_element(By.ID, "output")
    WebDriverWait(browser, 30).until(lambda _: output.get_attribute("data-state") != "running")
    browser.save_screenshot(str(tmp_path / "generate.png"))
    assert output.get_attribute("data-state") == "done", browser.find_element(By.ID, "status").text
    # textContent, not .text: .text is what is rendered, with white space collapsed.
    text = output.get_attribute("textContent")
    assert text.startswith("JULIET:") and len(text) == len("JULIET:") + 300
    assert text == generator.generate("JULIET:", 300, temperature=0.6, seed=7)
    assert "seed 7" in browser.find_element(By.ID, "status").text


def test_surprise_colours_each_scored_character(browser, server, tmp_path):
    url, generator = server
    browser.get(url + "/")
    text = "ROMEO: But soft, what light\nthrough yonder window breaks?"
    browser.find_element(By.ID, "score-text").send_keys(text)
    browser.find_element(By.ID, "score").click()
    view = browser.find_element(By.ID, "score-view")
    WebDriverWait(browser, 30).until(lambda _: "mean surprise" in browser.find_element(
        By.ID, "score-status").text)  # fmt: skip
    browser.save_screenshot(str(tmp_path / "surprise.png"))
    spans = view.find_elements(By.TAG_NAME, "span")
    assert len(spans) == len(text)
    values = [span.get_attribute("data-value") for span in spans]
    assert values[0] is None and all(v is not None for v in values[1:])  # the first: unscored
    coloured = [span.value_of_css_property("background-color") for span in spans[1:]]
    assert len(set(coloured)) > 5  # a range of reds, not one flat colour
    assert json.loads(values[1]) > 0
