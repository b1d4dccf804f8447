"""The web viewer at / in a real browser: headless Chromium driven by Selenium against a real `infolens serve` —
pick a shipped example, explain it, watch the progress, switch class tabs, download the files.  The test saves a
screenshot (tmp_path, and $INFOLENS_SCREENSHOTS when set).  Skipped, saying why, only where Chromium and its driver
are not installed (.ci/run installs them)."""
import os
import shutil

import cv2
import pytest

import onnx_builders
from conftest import scene, write_card
from infolens.cli import build_parser
from infolens.params import ExplainConfig
from test_serve import server

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn, prometheus-client) is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra has it)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no Chromium and chromedriver installed "
                                 "(Debian: apt-get install chromium chromium-driver)")]


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_explain_an_example_in_the_browser(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    models, examples = tmp_path / "models", tmp_path / "examples"
    models.mkdir(), examples.mkdir()
    write_card(onnx_builders.classifier(models / "toy.onnx", H=24, W=24, n_classes=6), "NCHW", "RGB", "float32")
    cv2.imwrite(str(examples / "scene.png"), scene(24, 24)[:, :, ::-1])  # the toy card: resize none
    with server(tmp_path, "--models", models, "--examples", examples, "--chunk-forwards", 40) as (url, _):
        browser.get(url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: len(Select(d.find_element(By.ID, "model")).options) == 1)
        cli = build_parser().parse_args(["explain", "x.png"])  # the form starts where `infolens explain` does
        start = {f: browser.find_element(By.ID, f).get_attribute("value") for f in ("method", "K", "S", "N", "classes",
                                                                                     "seed")}
        assert start == {"method": cli.method, "K": str(cli.K), "S": str(cli.S or cli.K),
                         "N": str(cli.N or ExplainConfig.default_samples(cli.method)), "classes": cli.classes,
                         "seed": str(cli.seed)}
        Select(browser.find_element(By.ID, "example")).select_by_visible_text("scene.png")
        wait.until(lambda d: d.find_element(By.ID, "explain").is_enabled())
        for field, value in (("K", "4"), ("S", "2"), ("N", "3"), ("classes", "top2")):
            box = browser.find_element(By.ID, field)
            box.clear()
            box.send_keys(value)
        Select(browser.find_element(By.ID, "sampler")).select_by_visible_text("noise")
        browser.find_element(By.ID, "explain").click()
        wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("Done"))
        assert "364 forwards" in browser.find_element(By.ID, "status").text
        assert browser.find_element(By.ID, "error").text == ""
        tabs = browser.find_elements(By.CSS_SELECTOR, "#tabs button")
        assert [t.text.split(":")[0] for t in tabs] == ["PMI", "PMI", "IG"]
        image = browser.find_element(By.ID, "map")
        wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 0)
        first = image.get_attribute("src")
        tabs[2].click()
        wait.until(lambda d: d.find_element(By.ID, "map").get_attribute("data-key") == "ig")
        assert image.get_attribute("src") != first and "on" in tabs[2].get_attribute("class")
        for fmt in ("npz", "json", "png"):
            link = browser.find_element(By.ID, f"download-{fmt}")
            assert link.get_attribute("href").startswith("blob:")
        shot = tmp_path / "viewer.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("INFOLENS_SCREENSHOTS"):
            os.makedirs(os.environ["INFOLENS_SCREENSHOTS"], exist_ok=True)
            shutil.copy(shot, os.environ["INFOLENS_SCREENSHOTS"])
