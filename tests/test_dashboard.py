"""The dashboard at /ui as a person meets it: Debian's Chromium, headless, driven by playwright
(its Python package drives the browser with playwright-core's own driver) against the real `cms
transfer serve`, moto and Azurite. Every test fails on a script error or a Content-Security-Policy
violation in the page, and saves a screenshot of each page it shows as a test artifact, in
build/screenshots/TEST/ (or $CMS_TRANSFER_SCREENSHOTS/TEST/). The REST operations the dashboard added are tested
here over HTTP too."""
import json
import os
import pty
import re
import select
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import expect, sync_playwright

import emulators as emu
from cloudmesh.transfer.limits import BROWSE_ROWS, PREVIEW_ROWS, SAMPLES_MAX, STATISTIC_DAYS
from cloudmesh.transfer.records.sqlite import SQLiteRecords
from conftest import CMS
from faultproxy import FaultProxy
from test_resume_cancel import proxied, seed_folder, until
from test_service import SPEC, TOKEN, Service, problem

ROOT = Path(__file__).resolve().parents[1]
UI = ROOT / "cloudmesh" / "transfer" / "service" / "ui"
CHROMIUM = os.environ.get("CMS_TRANSFER_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-sync"]
SHOTS = Path(os.environ.get("CMS_TRANSFER_SCREENSHOTS", ROOT / "build" / "screenshots"))
XSS = "<img src=x onerror=window.pwned=1>"
CONTRACT = yaml.safe_load(SPEC.read_text())
expect.set_options(timeout=30_000)


class TerminalService(Service):
    """The service started from a terminal, as a person starts it: its standard output is a pty,
    whose first line this keeps (`printed`)."""

    def spawn(self, environ: dict, log) -> subprocess.Popen:
        self.terminal, tty = pty.openpty()
        process = subprocess.Popen([CMS, "transfer", "serve", f"--port={self.port}"], env=environ, cwd=self.cwd,
                                   stdout=tty, stderr=log)
        os.close(tty)
        seen, deadline = b"", time.monotonic() + 30
        while b"\n" not in seen and time.monotonic() < deadline:
            if select.select([self.terminal], [], [], 0.5)[0]:
                seen += os.read(self.terminal, 4096)
        self.printed = seen.decode().strip()
        return process

    def stop(self) -> None:
        super().stop()
        os.close(self.terminal)


class SlowProxy(FaultProxy):
    """A proxy in front of Azurite that holds each block upload `delay` seconds: a transfer slow
    enough to watch."""

    def __init__(self, upstream: str, delay: float):
        self.delay = delay
        super().__init__(upstream, seed=0, flavor="azure")

    def _decide(self, method, path, headers):
        if method == "PUT" and re.search(r"[?&]comp=block(&|$)", path):
            time.sleep(self.delay)
        return super()._decide(method, path, headers)


@pytest.fixture(scope="module")
def playwright():
    with sync_playwright() as running:
        yield running


class Browser:
    """One fresh Chromium profile and its page, with what went wrong in it."""

    def __init__(self, playwright, profile: Path, name: str):
        self.context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS, viewport={"width": 1280, "height": 900})
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
        self.name, self.problems = name, []
        self.page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        self.page.on("console", self.console)

    def console(self, message) -> None:
        """Errors in the console, but for the browser's own line about an answered 4xx."""
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.problems.append(message.text)

    def sign_in(self, service: Service, page: str = "#/") -> None:
        self.page.goto(f"{service.url}/ui/#token={service.token}")
        expect(self.page.get_by_role("heading", name="Transfers")).to_be_visible()
        if page != "#/":
            self.page.goto(f"{service.url}/ui/{page}")

    def shot(self, what: str) -> Path:
        (SHOTS / self.name).mkdir(parents=True, exist_ok=True)
        path = SHOTS / self.name / f"{what}.png"
        self.page.screenshot(path=path, full_page=True)
        return path

    def value(self, script: str):
        return self.page.evaluate(script)


@pytest.fixture
def browser(playwright, tmp_path, request):
    opened = Browser(playwright, tmp_path / "chromium", request.node.name)
    yield opened
    opened.context.close()
    assert opened.problems == [], opened.problems


@pytest.fixture
def service(env):
    running = Service(env.environ(), env.config_dir)
    yield running
    running.stop()


def text_of(locator) -> str:
    return " ".join(locator.inner_text().split())


# ---- the pages ----


def test_serve_prints_the_address_that_signs_in_and_the_token_never_reaches_the_server(env, browser):
    service = TerminalService(env.environ(), env.config_dir)
    try:
        assert service.printed == f"dashboard: {service.url}/ui/#token={TOKEN}"
        page = browser.page
        page.goto(service.printed.removeprefix("dashboard: "))
        expect(page.get_by_role("heading", name="Transfers")).to_be_visible()
        expect(page.get_by_role("navigation", name="Pages")).to_be_visible()
        assert TOKEN not in page.url and page.url.endswith("/ui/#/")
        assert browser.value("() => sessionStorage.getItem('cms-transfer-token')") == TOKEN
        assert browser.value("() => localStorage.length") == 0 and browser.context.cookies() == []
        page.reload()  # the tab keeps its sign-in
        expect(page.get_by_role("heading", name="Transfers")).to_be_visible()
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_label("Bearer token")).to_be_focused()
        assert browser.value("() => sessionStorage.length") == 0
    finally:
        service.stop()
    assert TOKEN not in service.log.read_text()


def test_serve_without_a_terminal_prints_the_address_without_the_token(env, service):
    printed = [line for line in service.log.read_text().splitlines() if line.startswith("dashboard:")]
    assert printed == [f"dashboard: {service.url}/ui/ (sign in with the bearer token: $CMS_TRANSFER_TOKEN)"]


def test_a_wrong_token_brings_the_sign_in_back(env, service, browser):
    page = browser.page
    page.goto(f"{service.url}/ui/#token=not-the-token")
    expect(page.get_by_role("alert").filter(has_text="did not accept the token")).to_be_visible()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert browser.value("() => sessionStorage.length") == 0
    browser.shot("sign-in")
    page.get_by_label("Bearer token").fill(TOKEN)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Transfers")).to_be_visible()
    browser.value("() => sessionStorage.setItem('cms-transfer-token', 'revoked')")  # as if the token changed
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("navigation", name="Pages")).to_be_hidden()


def test_a_folder_copy_started_from_the_form_is_watched_to_100_percent(env, service, browser, request):
    p, page = env.prefix, browser.page
    proxy = SlowProxy(f"http://127.0.0.1:{env.emulators.azure_port}", delay=0.4)
    request.addfinalizer(proxy.stop)
    env.add_storage("slow", "azure", endpoint=f"{proxy.url}/{emu.AZURITE_ACCOUNT}")
    for i in range(12):
        env.put("awss3", f"{p}/src/sub/f{i:02}.txt", os.urandom(1000 + i))
    env.put("awss3", f"{p}/src/big.bin", os.urandom(96 * 1024 * 1024))  # long enough for a plot
    env.put("awss3", f"{p}/other.txt", b"not copied")
    browser.sign_in(service, "#/new")
    page.select_option("#source-storage", "awss3")
    page.locator("#source-browse").click()
    browser_panel = page.locator("#source-browser")
    browser_panel.get_by_role("button", name=f"📁 {p}/").click()
    expect(browser_panel.get_by_role("button", name="📁 src/")).to_be_visible()
    expect(browser_panel.get_by_role("button", name="other.txt (10 B)")).to_be_visible()
    browser_panel.get_by_role("button", name="📁 src/").click()
    browser_panel.get_by_role("button", name="Use this folder").click()
    assert page.locator("#source-path").input_value() == f"{p}/src/"
    assert page.get_by_label("Recursive").is_checked()
    page.select_option("#target-storage", "slow")
    page.get_by_label("Path").nth(1).fill(f"{p}/dst/")
    page.get_by_label("Parallel").fill("1")
    page.get_by_role("button", name="Preview (dry run)").click()
    preview = page.get_by_role("table", name="Preview")
    expect(preview.locator("tbody tr")).to_have_count(13)
    expect(page.get_by_text("13 objects: 13 to copy, 0 to skip")).to_be_visible()
    assert env.tree("azure", f"{p}/dst") == {}  # a preview changes nothing
    browser.shot("new-transfer")
    page.get_by_role("button", name="Start").click()
    expect(page.get_by_role("heading", name=re.compile("^Transfer "))).to_be_visible()
    expect(page.locator("#transfer-state")).to_have_text("running")
    expect(page.locator("#transfer-progress")).to_contain_text(re.compile(r"\b[1-9][0-9]?% · "))  # under way
    expect(page.locator(".plot canvas")).to_be_visible()  # two throughputs, from three samples
    browser.shot("transfer-running")
    expect(page.locator("#transfer-state")).to_have_text("completed")
    expect(page.locator("#transfer-progress")).to_contain_text("100% · 13/13 objects")
    expect(page.get_by_role("table", name="Objects by method")).to_contain_text("stream")
    expect(page.locator(".plot canvas")).to_be_visible()
    browser.shot("transfer")
    assert env.tree("azure", f"{p}/dst") == env.tree("awss3", f"{p}/src")
    page.get_by_role("link", name="Transfers", exact=True).click()
    row = page.get_by_role("table", name="Transfers").locator("tbody tr").first
    expect(row).to_contain_text("completed")
    expect(row).to_contain_text(f"awss3:{p}/src → slow:{p}/dst")
    expect(row).to_contain_text("100% · 13/13 objects")
    browser.shot("transfers")
    page.get_by_role("link", name="Statistics").click()
    expect(page.get_by_role("table", name="By route")).to_contain_text("awss3->azureblob")  # the kind of "slow"
    expect(page.get_by_role("table", name="Transfers by state")).to_contain_text("completed1")
    expect(page.locator(".plot canvas")).to_have_count(1)
    browser.shot("statistics")


def test_a_move_needs_its_confirmation(env, service, browser):
    p, page = env.prefix, browser.page
    env.put("awss3", f"{p}/src/a.txt", b"alpha")
    browser.sign_in(service, "#/new")
    page.select_option("#source-storage", "awss3")
    page.locator("#source-path").fill(f"{p}/src/")
    page.get_by_label("Recursive").check()
    page.select_option("#target-storage", "local")
    page.locator("#target-path").fill(f"{p}/dst/")
    page.get_by_label("Move (delete the sources)").check()
    page.get_by_role("button", name="Start").click()
    expect(page.get_by_role("alert").filter(has_text="tick the confirmation")).to_be_visible()
    assert service.json("GET", "/transfers")["total"] == 0
    page.get_by_label("I understand that each source object is deleted").check()
    page.get_by_role("button", name="Start").click()
    expect(page.locator("#transfer-state")).to_have_text("completed")
    assert env.tree("local", f"{p}/dst") == {"a.txt": b"alpha"} and env.tree("awss3", f"{p}/src") == {}


def test_cancel_a_running_transfer_and_resume_it(env, service, browser, request):
    p, page = env.prefix, browser.page
    tree = seed_folder(env, 40)
    proxy, target = proxied(env, request, "azure", allow=2)
    service.json("POST", "/transfers", {"source": f"local:{p}/src", "target": f"{target}:{p}/dst", "recursive": True,
                                        "id": p, "parallel": 1, "chunksize": "5MiB"}, expect=202)
    until(proxy.held.is_set, "a part upload held at the proxy")
    browser.sign_in(service, f"#/transfers/{p}")
    expect(page.locator("#transfer-state")).to_have_text("running")
    expect(page.get_by_role("button", name="Resume")).to_be_disabled()
    browser.shot("running")
    page.once("dialog", lambda dialog: dialog.accept() if "Cancel transfer" in dialog.message else dialog.dismiss())
    page.get_by_role("button", name="Cancel").click()
    asked = until(lambda: service.json("GET", f"/transfers/{p}")["message"] == "cancel requested" and time.time(),
                  "the cancel request")
    with sqlite3.connect(env.config_dir / "transfer.db") as db:  # once the run's lease has seen it, it cannot finish
        until(lambda: db.execute("SELECT heartbeat FROM transfers WHERE id = ?", (p,)).fetchone()[0] > asked,
              "a heartbeat after the cancel")
    proxy.release(drop=True)
    expect(page.locator("#transfer-state")).to_contain_text("cancelled")
    expect(page.locator("dl.facts")).to_contain_text("Uploads open0")
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#transfer-state")).to_have_text("completed")
    assert env.tree("azure", f"{p}/dst") == tree


def test_a_failed_object_shows_its_message_and_every_name_is_text(env, service, browser):
    p, page = env.prefix, browser.page
    env.put("awss3", f"{p}/{XSS}/ok.txt", b"fine")
    env.put("awss3", f"{p}/{XSS}/{XSS}.", b"Azure cannot store a name that ends in a dot")
    service.json("POST", "/transfers", {"source": f"awss3:{p}/{XSS}", "target": f"azure:{p}/dst", "recursive": True,
                                        "id": p}, expect=202)
    assert service.wait(p)["objects_failed"] == 1
    browser.sign_in(service)
    row = page.get_by_role("table", name="Transfers").locator("tbody tr").first
    expect(row).to_contain_text(f"awss3:{p}/{XSS} → azure:{p}/dst")
    page.get_by_role("link", name=p).click()
    expect(page.locator("#transfer-state")).to_have_text("failed — 1 of 2 objects failed")
    failed = page.get_by_role("table", name="Failed objects")
    expect(failed.locator("td").first).to_have_text(f"{XSS}.")
    expect(failed.locator("td").nth(1)).to_contain_text("cannot be stored")
    browser.shot("failed")
    page.goto(f"{service.url}/ui/#/new")
    page.select_option("#source-storage", "awss3")
    page.locator("#source-path").fill(f"{p}/{XSS}/")
    page.locator("#source-browse").click()
    expect(page.locator("#source-browser").get_by_role("button", name=f"{XSS}. (44 B)")).to_be_visible()
    assert page.locator("img").count() == 0 and browser.value("() => window.pwned") is None


def test_a_transfer_that_ran_on_a_cluster_shows_its_workers(env, service, browser):
    """What each worker settled, as a cluster's workers record it (tests/test_cluster.py runs real ones)."""
    p, page = env.prefix, browser.page
    env.put("awss3", f"{p}/src/a.txt", b"alpha")
    service.json("POST", "/transfers", {"source": f"awss3:{p}/src", "target": f"azure:{p}/dst", "recursive": True,
                                        "id": p}, expect=202)
    service.wait(p)
    records = SQLiteRecords(env.config_dir / "transfer.db")
    records.worker_done(p, "tcp://127.0.0.1:40001", 3, 3 * 1024 * 1024)
    records.worker_done(p, "tcp://127.0.0.1:40002", 2, 1024)
    records.close()
    browser.sign_in(service, f"#/transfers/{p}")
    workers = page.get_by_role("table", name="Workers").locator("tbody tr")
    expect(workers).to_have_count(2)
    expect(workers.first).to_have_text(re.compile(r"tcp://127\.0\.0\.1:40001\s*3\s*3\.00 MiB"))
    expect(workers.nth(1)).to_have_text(re.compile(r"tcp://127\.0\.0\.1:40002\s*2\s*1\.00 KiB"))


def test_the_pages_fit_from_360_to_1920_wide_label_every_field_and_work_from_the_keyboard(env, service, browser):
    page = browser.page
    env.put("awss3", f"{env.prefix}/src/a.txt", b"alpha")
    service.json("POST", "/transfers", {"source": f"awss3:{env.prefix}/src", "target": f"azure:{env.prefix}/dst",
                                        "recursive": True, "id": env.prefix}, expect=202)
    service.wait(env.prefix)
    browser.sign_in(service)
    for width in (360, 1920):
        page.set_viewport_size({"width": width, "height": 900})
        for hash, heading in (("#/", "Transfers"), ("#/new", "New transfer"), ("#/statistics", "Statistics"),
                              (f"#/transfers/{env.prefix}", f"Transfer {env.prefix}")):
            page.goto(f"{service.url}/ui/{hash}")
            expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
            page.wait_for_load_state("networkidle")
            overflow = browser.value("() => document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, (width, hash, overflow)
            unlabelled = browser.value("""() => [...document.querySelectorAll('input, select, textarea')]
                .filter(e => !e.closest('[hidden]') && !e.labels.length && !e.getAttribute('aria-label')).map(e => e.id)""")
            assert unlabelled == [], (hash, unlabelled)
            browser.shot(f"{heading.split()[0].lower()}-{width}")
    page.goto(f"{service.url}/ui/#/")
    expect(page.get_by_role("link", name=env.prefix)).to_be_visible()
    focused = "() => document.activeElement.id || document.activeElement.textContent.trim()"
    assert browser.value(focused) == "main"  # a page puts the focus at its start
    reached = []
    for _ in range(3):
        page.keyboard.press("Tab")
        reached.append(browser.value(focused))
    assert reached == ["state-filter", "Start a transfer", env.prefix], reached
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=f"Transfer {env.prefix}")).to_be_visible()
    reached = []
    for _ in range(3):
        page.keyboard.press("Shift+Tab")
        reached.append(browser.value(focused))
    assert reached == ["signout", "Statistics", "New transfer"], reached
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="New transfer")).to_be_visible()
    expect(page.get_by_label("Storage").first).to_be_visible()


def test_the_list_filters_by_state_and_pages_through_many_transfers(env, service, browser):
    page = browser.page
    env.put("awss3", f"{env.prefix}/src/a.txt", b"alpha")
    for i in range(53):
        service.json("POST", "/transfers", {"source": f"awss3:{env.prefix}/src/a.txt",
                                            "target": f"local:{env.prefix}/{i}.txt", "id": f"many-{i:02}"}, expect=202)
        assert service.wait(f"many-{i:02}")["state"] == "completed"
    browser.sign_in(service)
    rows = page.get_by_role("table", name="Transfers").locator("tbody tr")
    expect(rows).to_have_count(50)
    expect(page.get_by_text("1–50 of 53")).to_be_visible()
    page.get_by_role("button", name="Older").click()
    expect(rows).to_have_count(3)
    expect(page.get_by_text("51–53 of 53")).to_be_visible()
    expect(page.get_by_role("button", name="Older")).to_be_disabled()
    page.select_option("#state-filter", "failed")
    expect(page.get_by_text("No transfers.")).to_be_visible()
    page.select_option("#state-filter", "completed")
    expect(page.get_by_text("1–50 of 53")).to_be_visible()


# ---- how the dashboard is served ----


def test_the_dashboard_is_served_with_a_strict_policy_and_no_token_for_its_files(service):
    for path in ("/ui/", "/ui/app.js", "/ui/app.css", "/ui/vendor/uPlot.iife.min.js"):
        response = service.call("GET", path, token=None)
        assert response.status == 200, path
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe" not in policy and "frame-ancestors 'none'" in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    index = service.call("GET", "/ui/", token=None)
    assert index.headers["Content-Type"].startswith("text/html")
    scripts = re.findall(rb"<script([^>]*)>(.*?)</script>", index.data, re.S)
    assert scripts and all(b"src=" in attributes and not body.strip() for attributes, body in scripts)
    assert not re.search(rb"\son[a-z]+=|style=", index.data)  # no inline handlers or styles
    redirect = service.call("GET", "/ui", token=None)
    assert redirect.status == 308 and redirect.headers["Location"].endswith("/ui/")
    problem(service.call("GET", "/ui/../openapi.json", token=None), 401)  # normalized by the client: not a page
    problem(service.call("GET", "/ui/%2e%2e/openapi.json", token=None), 404)
    problem(service.call("GET", "/ui/nothing.js", token=None), 404)
    assert service.call("POST", "/ui/", token=None).status == 405
    assert service.call("GET", "/transfers", token=None).status == 401  # the API still needs the token


def test_the_vendored_plot_library_is_the_pinned_npm_package_with_its_licence():
    package = json.loads((ROOT / "deploy" / "package.json").read_text())
    installed = ROOT / "deploy" / "node_modules" / "uplot"
    assert json.loads((installed / "package.json").read_text())["version"] == package["dependencies"]["uplot"]
    for name in ("uPlot.iife.min.js", "uPlot.min.css"):
        assert (UI / "vendor" / name).read_bytes() == (installed / "dist" / name).read_bytes(), name
    assert (UI / "vendor" / "uPlot.LICENSE").read_bytes() == (installed / "LICENSE").read_bytes()
    assert not re.search(r"innerHTML|insertAdjacentHTML|outerHTML|document\.write", (UI / "app.js").read_text())


def test_chromium_is_the_one_ci_installs():
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: .ci/run installs Debian's chromium with apt-get"


# ---- the REST operations the dashboard uses ----


def test_samples_show_a_copy_progressing_to_its_total(env, service):
    p = env.prefix
    for i in range(3):
        env.put("awss3", f"{p}/src/{i}.bin", os.urandom(3 * 1024 * 1024))
    service.json("POST", "/transfers", {"source": f"awss3:{p}/src", "target": f"azure:{p}/dst", "recursive": True,
                                        "id": p}, expect=202)
    status = service.wait(p)
    samples = service.json("GET", f"/transfers/{p}/samples")
    assert samples["id"] == p and samples["samples"]
    done = [s["bytes_done"] for s in samples["samples"]]
    assert done == sorted(done) and done[-1] == status["bytes_done"] == 9 * 1024 * 1024
    assert samples["samples"][-1]["objects_done"] == 3
    problem(service.call("GET", "/transfers/nothing/samples"), 404)


def test_a_preview_lists_the_plan_and_changes_nothing(env, service):
    p = env.prefix
    env.put("awss3", f"{p}/src/a.txt", b"alpha")
    env.put("awss3", f"{p}/src/b.csv", b"beta")
    env.put("azure", f"{p}/dst/a.txt", b"alpha")
    plan = service.json("POST", "/previews", {"source": f"awss3:{p}/src", "target": f"azure:{p}/dst",
                                              "recursive": True, "sync": "checksum", "move": True})
    assert plan["truncated"] is False
    assert [(r["action"], r["path"], r["size"]) for r in plan["rows"]] == [
        ("skip, delete source", "a.txt", 5), ("copy, delete source", "b.csv", 4)]  # a.txt: the same MD5
    only = service.json("POST", "/previews", {"source": f"awss3:{p}/src", "target": f"azure:{p}/dst",
                                              "recursive": True, "include": ["*.csv"]})
    assert [r["path"] for r in only["rows"]] == ["b.csv"]
    assert env.tree("awss3", f"{p}/src") == {"a.txt": b"alpha", "b.csv": b"beta"}
    assert env.tree("azure", f"{p}/dst") == {"a.txt": b"alpha"} and service.json("GET", "/transfers")["total"] == 0
    assert "nowhere" in problem(service.call("POST", "/previews", {"source": "nowhere:x", "target": "azure:y"}),
                                400)["detail"]
    problem(service.call("POST", "/previews", {"source": f"awss3:{p}/missing", "target": "azure:y"}), 400)


def test_objects_lists_one_folder_level(env, service):
    p = env.prefix
    env.put("awss3", f"{p}/a.txt", b"alpha")
    env.put("awss3", f"{p}/sub/deep/b.txt", b"beta")
    listing = service.json("GET", f"/objects?location=awss3:{p}/")
    assert listing["truncated"] is False and listing["location"] == f"awss3:{p}/"
    assert [(e["name"], e["size"]) for e in listing["entries"]] == [("a.txt", 5), ("sub/", None)]
    problem(service.call("GET", f"/objects?location=awss3:{p}/missing"), 404)
    assert "nowhere" in problem(service.call("GET", "/objects?location=nowhere:x"), 400)["detail"]
    assert "'..'" in problem(service.call("GET", "/objects?location=local:../.."), 400)["detail"]
    assert "longer than 255 bytes" in problem(service.call("GET", f"/objects?location=local:{'a' * 300}"), 400)["detail"]
    env.put("awss3", f"{p}/sub", b"an object beside the folder")
    assert [e["name"] for e in service.json("GET", f"/objects?location=awss3:{p}/sub/")["entries"]] == ["deep/"]
    (env.config_dir.parent / "outside.txt").write_text("not under the local root")
    assert "outside.txt" not in service.call("GET", "/objects?location=local:").data.decode()


def test_previews_and_folder_listings_stop_at_their_limits(env, service):
    folder = env.local / env.prefix
    folder.mkdir()
    for i in range(BROWSE_ROWS + 1):
        (folder / f"f{i:04}").write_bytes(b"x")
    listing = service.json("GET", f"/objects?location=local:{env.prefix}/")
    assert listing["truncated"] is True and len(listing["entries"]) == BROWSE_ROWS
    assert listing["entries"][-1]["name"] == f"f{BROWSE_ROWS - 1:04}"
    plan = service.json("POST", "/previews", {"source": f"local:{env.prefix}", "target": "azure:x", "recursive": True})
    assert plan["truncated"] is True and len(plan["rows"]) == PREVIEW_ROWS


def test_the_contract_states_the_limits_the_service_keeps():
    paths, schemas = CONTRACT["paths"], CONTRACT["components"]["schemas"]
    assert f"At most {PREVIEW_ROWS} rows" in paths["/previews"]["post"]["description"]
    assert f"At most {BROWSE_ROWS} entries" in paths["/objects"]["get"]["description"]
    assert f"at most {SAMPLES_MAX} samples" in paths["/transfers/{id}/samples"]["get"]["description"]
    assert f"the last {STATISTIC_DAYS} days" in schemas["Statistic"]["properties"]["by_day"]["description"]


def test_cleanup_discards_what_a_stopped_transfer_left(env, service, request):
    p = env.prefix
    tree = seed_folder(env, 30)
    proxy, target = proxied(env, request, "awss3", allow=2)
    service.json("POST", "/transfers", {"source": f"local:{p}/src", "target": f"{target}:{p}/dst", "recursive": True,
                                        "id": p, "parallel": 1, "chunksize": "5MiB"}, expect=202)
    until(proxy.held.is_set, "a part upload held at the proxy")
    assert "running" in problem(service.call("POST", f"/transfers/{p}/cleanup"), 409)["detail"]
    service.stop()  # the transfer is interrupted with its upload open
    proxy.release(drop=True)
    service.start()
    assert service.json("GET", f"/transfers/{p}")["uploads_open"] == 1
    cleaned = service.json("POST", f"/transfers/{p}/cleanup")
    assert cleaned == {"id": p, "discarded": [f"{p}/dst/big.bin"]}
    assert env.s3.list_multipart_uploads(Bucket=emu.BUCKET, Prefix=f"{p}/").get("Uploads", []) == []
    assert service.json("POST", f"/transfers/{p}/cleanup") == {"id": p, "discarded": []}
    service.json("POST", f"/transfers/{p}/resume", expect=202)
    assert service.wait(p)["state"] == "completed" and env.tree("awss3", f"{p}/dst") == tree
    problem(service.call("POST", "/transfers/nothing/cleanup"), 404)
