"""The docs page: Swagger UI served by the service itself, driven in a real headless Chromium.

Chromium and ChromeDriver come from Debian's packages (``.ci/run`` installs them); the
browser test skips, saying so, only where they are missing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import EXAMPLES, Server

StartServer = Callable[..., Server]
TOKEN = "docs-page-token"
#: The README's screenshot; remade by ``NB2SVC_UPDATE_SCREENSHOT=1 python -m pytest tests/test_docs_page.py``.
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "docs-page.png"


@pytest.fixture
def server(start_server: StartServer) -> Server:
    return start_server(str(EXAMPLES / "hello.ipynb"), "--pool-size", "1", "--token", TOKEN)


def test_docs_page_is_swagger_ui_served_locally(server: Server) -> None:
    page = server.get("/_api/docs")  # no token needed for the page itself
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    assert not re.search(r"(src|href)=\"https?://", page.text), "the page must not load anything from a CDN"
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/_api/docs/static/{asset}" in page.text
        static = server.get(f"/_api/docs/static/{asset}")
        assert static.status_code == 200 and len(static.content) > 10_000
    assert server.get("/_api/docs/static/..%2Fswagger-initializer.js").status_code == 404
    assert server.get("/_api/docs/static/index.html").status_code == 404  # only the files the page uses
    assert server.get("/openapi.json").status_code == 401  # the document itself needs the token
    doc = server.get("/openapi.json", headers={"Authorization": f"token {TOKEN}"}).json()
    assert doc["components"]["securitySchemes"]["token"]["name"] == "Authorization"


def test_root_redirects_to_the_docs_keeping_the_query(server: Server) -> None:
    r = server.get("/?token=" + TOKEN, allow_redirects=False)
    assert r.status_code == 302
    assert r.headers["Location"].endswith("/_api/docs?token=" + TOKEN)


def test_a_notebook_that_claims_root_keeps_it(start_server: StartServer, tmp_path: Path) -> None:
    import nbformat

    from tests.notebooks import notebook

    path = tmp_path / "root.ipynb"
    nbformat.write(notebook("# GET /\nprint('mine')", kernel="python3", language="python"), path)
    server = start_server(str(path), "--pool-size", "1", "--token", TOKEN)
    assert server.get("/", allow_redirects=False).status_code == 401  # an endpoint: never exempt
    assert server.get("/", headers={"Authorization": f"token {TOKEN}"}).text == "mine\n"


def execute_and_read(wait: Any, operation: Any, expected: str) -> None:
    """Press the operation's Execute button and wait for ``expected`` in the answer shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    operation.find_element(By.CSS_SELECTOR, "button.execute").click()
    answer = wait.until(
        ec.text_to_be_present_in_element(
            (By.CSS_SELECTOR, ".live-responses-table .response .response-col_description"), expected
        )
    )
    assert answer


def test_try_an_endpoint_from_the_page_with_the_token(
    server: Server, browser: object, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(server.url("/?token=" + TOKEN))  # type: ignore[attr-defined]
    operation = wait.until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, "[id^='operations-'][id$='get_hello_name']"))
    )
    assert "token" not in browser.current_url  # type: ignore[attr-defined]
    operation.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    field = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "input[placeholder='name']")))
    field.send_keys("world")
    execute_and_read(wait, operation, "hello, world")
    shot = SCREENSHOT if os.environ.get("NB2SVC_UPDATE_SCREENSHOT") else tmp_path / "docs-page.png"
    browser.save_screenshot(str(shot))  # type: ignore[attr-defined]
    assert shot.stat().st_size > 10_000
    # The page sent the token it was opened with: the server answered the endpoint, not a 401.
    assert requests.get(server.url("/hello/world"), timeout=10).status_code == 401


CONTRACT_NOTEBOOK = (
    "import json",
    "# GET /orders\n"
    "# param qty: integer, minimum 1 - how many\n"
    "# param color: string, enum red|green, default green - paint\n"
    "print(json.dumps(PARAMS))",
)


def test_the_page_shows_a_contract_and_checks_try_it_out_input(
    start_server: StartServer, browser: object, tmp_path: Path
) -> None:
    """Swagger UI reads the declared schemas: the query parameter's type and description, the
    enum as a choice with its default, and a value below the minimum refused in the page."""
    import nbformat
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.notebooks import notebook

    path = tmp_path / "orders.ipynb"
    nbformat.write(notebook(*CONTRACT_NOTEBOOK, kernel="python3", language="python"), path)
    server = start_server(str(path), "--pool-size", "1")
    wait = WebDriverWait(browser, 30)
    browser.get(server.url("/_api/docs"))  # type: ignore[attr-defined]
    operation = wait.until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, "[id^='operations-'][id$='get_orders']"))
    )
    operation.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    table = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".parameters")))
    text = table.text
    assert "qty" in text and "integer" in text and "how many" in text and "paint" in text
    choice = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "select")))
    options = [o.text for o in choice.find_elements(By.TAG_NAME, "option")]
    assert "red" in options and "green" in options
    qty = operation.find_element(By.CSS_SELECTOR, "input[placeholder='qty']")
    qty.send_keys("0")
    operation.find_element(By.CSS_SELECTOR, "button.execute").click()
    wait.until(lambda _: "invalid" in (qty.get_attribute("class") or ""))
    assert not operation.find_elements(By.CSS_SELECTOR, ".live-responses-table .response")
    qty.clear()
    qty.send_keys("2")
    execute_and_read(wait, operation, '"qty": 2')
