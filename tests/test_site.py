"""The course website (``make site``) in a real browser: headless Chromium over a local server.

The site is built once per session as ``make site`` builds it (``site/build.py``: warnings
are errors) and served by ``http.server``; selenium drives Debian's Chromium and its
chromedriver. Statuses are read over HTTP, since WebDriver has none. Screenshots of the
landing page and of notebook 03 (its top and its first figure) go to ``runs/site-test/``.
Where the ``site`` extra or the browser is missing the tests skip saying why;
``SITE_TESTS=required`` (``.ci/run`` sets it) makes such a skip a failure.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers.hosted import colab_url

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "runs" / "site-test"
REQUIRED = os.environ.get("SITE_TESTS") == "required"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SITE_PACKAGES = ("sphinx", "myst_nb", "sphinx_book_theme", "selenium")
RUN_BOX = "python -m papermill --cwd notebooks -k python3 \\\n    notebooks/{0} runs/{0}"


def unavailable(reason: str):
    """Skip, or fail where the browser test is required (CI)."""
    if REQUIRED:
        pytest.fail(f"the site's browser test cannot run: {reason}")
    pytest.skip(reason)


def notebook_title(path: Path) -> str:
    """Return a notebook's title as a page shows it: its first heading, without Markdown marks."""
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        for line in "".join(cell["source"]).splitlines():
            if cell["cell_type"] == "markdown" and line.startswith("# "):
                return line[2:].replace("`", "").replace("*", "").strip()
    raise AssertionError(f"{path.name} has no '# ' title")


def http_status(url: str) -> int:
    """Return the HTTP status the local server answers for url."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serve files without logging each request to stderr."""

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        """Log nothing."""


class QuietServer(http.server.ThreadingHTTPServer):
    """A local server that ignores a browser closing a connection it no longer needs."""

    def handle_error(self, request, client_address):
        """Print errors other than a connection the browser closed."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def require_site_extra() -> None:
    """Skip (or fail, where required) unless the site extra is installed."""
    missing = [name for name in SITE_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        names = ", ".join(missing)
        unavailable(f"the site extra is not installed ({names}): pip install -e '.[site]'")


@pytest.fixture(scope="session")
def site() -> Path:
    """Build the site as ``make site`` does; return its HTML folder."""
    require_site_extra()
    build = subprocess.run(
        [sys.executable, "site/build.py"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert build.returncode == 0, f"make site failed:\n{build.stdout}\n{build.stderr}"
    return ROOT / "site" / "_build" / "html"


@pytest.fixture(scope="session")
def base_url(site):
    """Serve the built site on a free local port; return its address."""
    handler = functools.partial(QuietHandler, directory=str(site))
    server = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by selenium through Debian's chromedriver."""
    require_site_extra()
    from selenium import webdriver

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        unavailable("no Chromium: apt-get install chromium chromium-driver (Debian)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1000")
    chrome = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver))
    chrome.set_page_load_timeout(60)
    yield chrome
    chrome.quit()


def open_page(browser, url: str) -> None:
    """Load url in the browser after checking over HTTP that it answers 200."""
    assert http_status(url) == 200, url
    browser.get(url)


def toc_links(browser, base_url: str) -> list[str]:
    """Return the addresses of the sidebar's table of contents, in its order."""
    open_page(browser, base_url + "README.html")
    links = browser.find_elements("css selector", "nav.bd-docs-nav li.toctree-l1 > a")
    return [link.get_attribute("href").split("#")[0] for link in links]


def page_check(browser, base_url: str) -> dict:
    """Return what the open page shows: title, figures, text, links and outside requests."""
    return browser.execute_script(
        """
        const article = document.querySelector("article");
        const images = Array.from(article.querySelectorAll("img"));
        return {
          title: article.querySelector("h1").innerText,
          text: document.body.innerText,
          loaded: images.filter(i => i.complete && i.naturalWidth > 0).length,
          broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
          links: Array.from(document.querySelectorAll("a[href]"), a => a.href.split("#")[0]),
          outside: performance.getEntriesByType("resource").map(r => r.name)
                     .filter(name => !name.startsWith(arguments[0])),
        };
        """,
        base_url,
    )


def landed(browser, url: str) -> bool:
    """Return whether the browser shows url, loaded, with its article."""
    ready = browser.execute_script("return document.readyState") == "complete"
    return (
        browser.current_url == url
        and ready
        and bool(browser.find_elements("css selector", "article h1"))
    )


def test_the_landing_page_is_the_readme_with_the_course_in_order(browser, base_url):
    from selenium.webdriver.support.ui import WebDriverWait

    open_page(browser, base_url)  # index.html sends the visitor to the README
    WebDriverWait(browser, 10).until(lambda chrome: landed(chrome, base_url + "README.html"))
    assert page_check(browser, base_url)["title"].startswith("finetune-course")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / "landing.png"))
    lessons = [f"{base_url}notebooks/{path.stem}.html" for path in NOTEBOOKS]
    others = ["site/scorecard.html", "docs/instructor.html", "data/samples/README.html"]
    expected = [base_url + "README.html", *lessons, *(base_url + page for page in others)]
    assert toc_links(browser, base_url) == expected


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem[:2])
def test_each_lesson_shows_its_title_figures_and_how_to_rerun_it(browser, base_url, notebook):
    open_page(browser, f"{base_url}notebooks/{notebook.stem}.html")
    page = page_check(browser, base_url)
    assert page["title"].startswith(notebook_title(notebook))
    assert page["loaded"] >= 1 and page["broken"] == []
    assert "Traceback" not in page["text"]
    assert RUN_BOX.format(notebook.name) in page["text"]
    here = [link for link in page["links"] if link.startswith(base_url)]  # Colab is outside
    downloads = [link for link in here if link.endswith(notebook.name)]
    assert downloads and all(http_status(link) == 200 for link in downloads)
    assert colab_url(notebook.name) in page["links"]  # from helpers.hosted, the one setting
    assert page["outside"] == []  # the page loads nothing from outside the site: it works offline
    if notebook.stem.startswith("03"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(SCREENSHOTS / "lesson-03.png"))
        browser.execute_script("document.querySelector('article img').scrollIntoView()")
        assert browser.save_screenshot(str(SCREENSHOTS / "lesson-03-figure.png"))


def test_every_page_of_the_toc_and_every_link_on_it_answers(browser, base_url):
    linked = set()
    for url in toc_links(browser, base_url):
        open_page(browser, url)
        page = page_check(browser, base_url)
        assert page["broken"] == [] and page["outside"] == [], url
        linked |= {link for link in page["links"] if link.startswith(base_url)}
    failing = {link: status for link in sorted(linked) if (status := http_status(link)) != 200}
    assert failing == {}


def test_the_search_page_finds_lora(browser, base_url):
    from selenium.webdriver.support.ui import WebDriverWait

    open_page(browser, base_url + "search.html?q=LoRA")
    results = WebDriverWait(browser, 30).until(
        lambda chrome: chrome.find_elements("css selector", "#search-results ul.search li a")
    )
    found = [result.get_attribute("href") for result in results]
    assert any("notebooks/03_lora_peft.html" in link for link in found), found
