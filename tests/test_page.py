"""The page of `charrnn serve`, in a real browser: Debian's chromium, headless, driven by
Selenium through Debian's chromedriver (Selenium is given both paths and downloads nothing).

A person's path: type a prime, press Generate, watch the text stream in; paste a text and
colour it by surprise. Screenshots are saved in pytest's temporary folder.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil

import pytest

from charrnn import load_model, rundir, use_config
from tests.serving import SlowStepper, live_server, need

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
    status = browser.find_element(By.ID, "status").text
    assert "seed 7" in status and "mean log-prob -" in status


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


def generate_on_page(browser, url: str, prime: str, length: int, **fields) -> object:
    """Fill the Write form (`fields`: element id -> value typed or set) and press Generate;
    the output element, once the stream has ended."""
    browser.get(url + "/")
    box = browser.find_element(By.ID, "prime")
    box.clear()
    box.send_keys(prime)
    set_range(browser, "length", length)
    for element_id, value in fields.items():
        element = browser.find_element(By.ID, element_id)
        if value is True:
            element.click()  # a checkbox
        else:
            element.clear()
            element.send_keys(str(value))
    browser.find_element(By.ID, "generate").click()
    output = browser.find_element(By.ID, "output")
    WebDriverWait(browser, 30).until(lambda _: output.get_attribute("data-state") != "running")
    assert output.get_attribute("data-state") == "done", browser.find_element(By.ID, "status").text
    return output


def test_several_samples_with_a_stop_string_each_in_a_block_of_its_own(browser, server):
    url, generator = server
    output = generate_on_page(browser, url, "JULIET:", 300, seed=5, samples=3, **{
        "top-k": 10, "stop-at": "e "})  # fmt: skip
    blocks = [b.get_attribute("textContent") for b in output.find_elements(By.TAG_NAME, "pre")]
    assert blocks == generator.generate("JULIET:", 300, seed=5, num_samples=3, top_k=10,
                                        stop=["e "])  # fmt: skip
    assert any(block.endswith("e ") for block in blocks)  # the stop string ended one at least
    assert "3 samples of" in browser.find_element(By.ID, "status").text
    captions = [c.text for c in output.find_elements(By.CLASS_NAME, "caption")]
    shape = r"sample (\d): mean log-prob (-\d+\.\d+) per character"
    read = [re.fullmatch(shape, caption).groups() for caption in captions]
    assert [int(number) for number, _ in read] == [1, 2, 3]
    means = [float(mean) for _, mean in read]
    assert len(means) == 3 and all(-10 < mean < 0 for mean in means)


def test_greedy_sets_the_draw_aside_and_writes_the_most_likely_text(browser, server):
    url, generator = server
    output = generate_on_page(browser, url, "ROMEO:", 120, greedy=True)
    assert all(not browser.find_element(By.ID, name).is_enabled()
               for name in ("temperature", "top-p", "top-k", "seed", "samples"))  # fmt: skip
    assert output.get_attribute("textContent") == generator.generate("ROMEO:", 120, greedy=True)
    assert browser.find_element(By.ID, "status").text.endswith("; greedy")


def test_a_stopped_stream_shows_its_prime_and_keeps_its_seed(browser, tiny_run):
    generator = load_model(str(tiny_run), "cpu", int8=True)
    slow = copy.copy(generator)
    slow.stepper = SlowStepper(generator.stepper, 0.01)  # 1,000 characters: 10 s at least
    with live_server(create_app(slow, use_config.ServeConfig(max_length=1000))) as url:
        browser.get(url + "/")
        set_range(browser, "length", 1000)
        browser.find_element(By.ID, "generate").click()
        prime = WebDriverWait(browser, 30).until(
            lambda b: b.find_element(By.CSS_SELECTOR, "#output .prime"))  # fmt: skip
        assert prime.get_attribute("textContent") == "ROMEO:"  # shown while it streams
        sample = browser.find_element(By.CSS_SELECTOR, "#output pre")
        WebDriverWait(browser, 30).until(
            lambda _: len(sample.get_attribute("textContent")) > len("ROMEO:") + 5)  # fmt: skip
        browser.find_element(By.ID, "stop").click()
        status = browser.find_element(By.ID, "status")
        WebDriverWait(browser, 30).until(lambda _: status.text.startswith("stopped"))
        seed = int(re.fullmatch(r"stopped; seed (\d+)", status.text).group(1))
        written = sample.get_attribute("textContent")
    assert written == generator.generate("ROMEO:", len(written) - len("ROMEO:"), seed=seed)


def test_generate_pressed_again_mid_stream_gives_the_page_to_the_new_run(browser, tiny_run):
    generator = load_model(str(tiny_run), "cpu", int8=True)
    slow = copy.copy(generator)
    slow.stepper = SlowStepper(generator.stepper, 0.01)
    with live_server(create_app(slow, use_config.ServeConfig(max_length=1000))) as url:
        browser.get(url + "/")
        set_range(browser, "length", 150)
        browser.find_element(By.ID, "seed").send_keys("4")
        browser.find_element(By.ID, "generate").click()
        WebDriverWait(browser, 30).until(
            lambda b: len(b.find_element(By.ID, "output").get_attribute("textContent")) > 10
        )
        browser.find_element(By.ID, "generate").click()  # the first run is aborted
        status = browser.find_element(By.ID, "status")
        WebDriverWait(browser, 30).until(lambda _: status.text.startswith("writing... (seed"))
        writing_stop_enabled = browser.find_element(By.ID, "stop").is_enabled()
        output = browser.find_element(By.ID, "output")
        WebDriverWait(browser, 30).until(lambda _: output.get_attribute("data-state") == "done")
        status = browser.find_element(By.ID, "status").text
        stop_enabled = browser.find_element(By.ID, "stop").is_enabled()
    assert output.get_attribute("textContent") == generator.generate("ROMEO:", 150, seed=4)
    assert writing_stop_enabled  # the aborted run's ending did not disable the new run's Stop
    assert "stopped" not in status and "seed 4" in status and not stop_enabled
