"""The console in a real browser: Chromium through WebDriver (Selenium),
against a running `reten serve --demo` (scripts/browser-test starts it).

Each step asserts what the page shows. Every wait is on a condition with a
generous bound, never a fixed sleep. On a failure the screenshot, the page's
console log, the network log and the page's HTML are saved under ARTIFACTS,
whose path is printed.

Environment: RETEN_URL (http://127.0.0.1:PORT), RETEN_TOKEN (an ADMIN JWT of
the demo tenant), RETEN_TENANT, ARTIFACTS (a folder), CHROMIUM, CHROMEDRIVER.
"""

import json
import os
import sys
import time
import traceback
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.common.exceptions import JavascriptException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

BASE = os.environ["RETEN_URL"].rstrip("/")
TOKEN = os.environ["RETEN_TOKEN"]
TENANT = os.environ["RETEN_TENANT"]
ARTIFACTS = os.environ.get("ARTIFACTS", "/tmp/reten-browser-test")
WAIT = float(os.environ.get("BROWSER_TEST_WAIT", "30"))
CRITERION = "criteria/preferred_contact.rhai"
BROKEN = "let x = ;"
FIX = "// checked in the browser test"

# Collects CSP violations in every page, before any of its scripts run.
CSP_PROBE = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.__csp.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + e.sourceFile + ':' + e.lineNumber);
});
"""


def api(method, path, body=None):
    """The API itself, to set up data and to compare with what the page shows."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + TOKEN)
    req.add_header("x-tenant-id", TENANT)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            text = res.read()
            return res.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        text = e.read()
        return e.code, (json.loads(text) if text else None)


class Browser:
    def __init__(self):
        options = webdriver.ChromeOptions()
        options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1280,800", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-default-apps",
                    "--disable-features=Translate,OptimizationHints,MediaRouter"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
        self.d = webdriver.Chrome(options=options, service=service)
        self.d.execute_cdp_cmd("Network.enable", {})
        self.d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CSP_PROBE})
        self.console = []
        self.network = []  # (url, method, document CSP header or None)
        self.responses = {}

    # ------------------------------------------------------------ logs
    def drain_logs(self):
        for entry in self.d.get_log("browser"):
            self.console.append(entry)
        for entry in self.d.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg["method"] == "Network.requestWillBeSent":
                req = msg["params"]["request"]
                self.network.append({"url": req["url"], "method": req["method"]})
            elif msg["method"] == "Network.responseReceived":
                res = msg["params"]["response"]
                headers = {k.lower(): v for k, v in res.get("headers", {}).items()}
                self.responses[res["url"]] = {"status": res["status"], "headers": headers}

    def csp_violations(self):
        try:
            return self.d.execute_script("return window.__csp || []")
        except JavascriptException:
            return []

    # ------------------------------------------------------------ waits
    def until(self, what, condition, timeout=WAIT):
        """Waits for condition(driver) to be truthy and returns it."""
        def check(d):
            try:
                return condition(d)
            except StaleElementReferenceException:
                return False
        return WebDriverWait(self.d, timeout, poll_frequency=0.1).until(check, message=f"waited {timeout}s for: {what}")

    def find(self, css):
        return self.d.find_element(By.CSS_SELECTOR, css)

    def text(self, css):
        """The element's rendered text, read in one script turn (so a panel
        that redraws itself on a timer is never caught half-way)."""
        return self.d.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText.trim() : null", css)

    def counts(self, css):
        """{data-count: number} of the counts under css, read in one turn."""
        return self.d.execute_script("""
            const out = {};
            for (const e of document.querySelectorAll(arguments[0] + ' [data-count]')) out[e.dataset.count] = Number(e.innerText);
            return out;""", css)

    def until_text(self, css, needle, timeout=WAIT):
        def has(d):
            els = d.find_elements(By.CSS_SELECTOR, css)
            return els and needle in els[0].text and els[0]
        return self.until(f"{css!r} to show {needle!r}", has, timeout)

    def click(self, css):
        """Clicks the element once it is shown and enabled; found again if
        the page redrew it meanwhile."""
        def clicked(d):
            e = d.find_element(By.CSS_SELECTOR, css)
            if not (e.is_displayed() and e.is_enabled()):
                return False
            e.click()
            return True
        self.until(f"{css!r} to be clicked", clicked)

    def tab(self, name):
        self.click(f"#tab-{name}")
        self.until(f"panel {name} shown", lambda d: d.find_element(By.ID, f"panel-{name}").is_displayed())
        if name == "history":
            self.until("the history loaded", lambda d: d.find_element(By.ID, "history").get_attribute("aria-busy") == "false")


def step(n, title):
    print(f"  [{n}] {title}", flush=True)


def run(b):
    d = b.d
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(BASE))

    # Decisions to replay: four WhatsApp messages for the demo commerce.
    status, found = api("GET", "/api/commerces?search=demo-c-1")
    assert status == 200 and found["data"], f"the demo commerce: {status} {found}"
    commerce = found["data"][0]
    for i in range(4):
        status, body = api("POST", "/api/activities", {
            "type": "MESSAGE", "channel": "WHATSAPP", "reason": "Browser test", "commerce_id": commerce["id"],
            "idempotency_key": f"browser-test-{i}-{time.time_ns()}", "scheduled_at": "2025-01-16T09:00:00.000Z",
        })
        assert status == 201, f"create {i}: {status} {body}"
    status, listing = api("GET", "/api/policies")
    first_revision = listing["revision"]
    status, detail = api("GET", f"/api/policies/revisions/{first_revision}")
    original = next(f["content"] for f in detail["set"] if f["path"] == CRITERION)

    # ------------------------------------------------------------ 1. sign in
    step(1, "sign in")
    d.get(BASE + "/")
    b.until("GET / to land on /console", lambda d: urlsplit(d.current_url).path == "/console")
    # By keyboard: the token, then Enter submits the form.
    b.find("#signin-token").send_keys(TOKEN, Keys.ENTER)
    b.until_text("#session-who", TENANT)
    b.until("the tenant's criterion listed", lambda d: d.find_elements(By.CSS_SELECTOR, f'#policies-tenant tr[data-path="{CRITERION}"]'))
    row = b.text(f'#policies-tenant tr[data-path="{CRITERION}"]')
    assert "RHAI" in row and "CRITERION (PREFERRED_CONTACT)" in row, row
    assert "role_match.rhai" in b.text("#policies-global"), "the global policies are listed beneath"
    assert b.text("#policies-revision") == str(first_revision)
    stored = d.execute_script("return [sessionStorage.length, localStorage.length, document.cookie, location.href]")
    assert stored[0] >= 1 and stored[1] == 0 and stored[2] == "" and TOKEN not in stored[3], f"the token is kept in the tab only: {stored}"
    unlabelled = d.execute_script("""
        return [...document.querySelectorAll('input, select, textarea, button')].filter(e =>
          !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !(e.textContent || '').trim()
        ).map(e => e.id || e.outerHTML.slice(0, 60));""")
    assert not unlabelled, f"controls without a label: {unlabelled}"
    # The tabs by keyboard: arrows move between them, focus follows.
    b.find("#tab-policies").send_keys(Keys.ARROW_RIGHT)
    b.until("Editor selected by the arrow key", lambda d: d.find_element(By.ID, "tab-editor").get_attribute("aria-selected") == "true"
            and d.switch_to.active_element.get_attribute("id") == "tab-editor")
    b.find("#tab-editor").send_keys(Keys.ARROW_LEFT)
    b.until("Policies again", lambda d: d.find_element(By.ID, "panel-policies").is_displayed())

    # ------------------------------------------------------------ 2. a syntax error
    step(2, "open the criterion, introduce a syntax error: shown at its line, Apply refused")
    b.click(f'#policies-tenant tr[data-path="{CRITERION}"] button')
    b.until("the editor shows the criterion", lambda d: "fn resolve(input)" in d.find_element(By.ID, "editor-text").get_attribute("value"))
    assert b.find("#editor-file").get_attribute("value") == CRITERION
    lines = original.split("\n")
    bad_line = len(lines)  # the file ends with a newline: the error goes on the last, empty line
    editor = b.find("#editor-text")
    editor.send_keys(Keys.CONTROL, Keys.END)
    editor.send_keys(BROKEN)
    b.until_text("#editor-check", "error(s) in " + CRITERION)
    item = b.until("an error at the broken line", lambda d: d.find_elements(By.CSS_SELECTOR, f'#editor-errors li[data-line="{bad_line}"]'))[0]
    assert f"line {bad_line}, column" in item.text, item.text
    assert b.find(f'#editor-gutter span[data-line="{bad_line}"]').get_attribute("class") == "err", "the gutter marks the line"
    metrics = d.execute_script("""
        const g = getComputedStyle(document.getElementById('editor-gutter'));
        const t = getComputedStyle(document.getElementById('editor-text'));
        return [[g.lineHeight, g.fontSize, g.paddingTop], [t.lineHeight, t.fontSize, t.paddingTop]];""")
    assert metrics[0] == metrics[1], f"the line numbers line up with the text: {metrics}"
    assert not b.find("#editor-apply").is_enabled(), "Apply is refused while the file has errors"
    assert "refused" in b.text("#editor-apply-why"), b.text("#editor-apply-why")
    # The editor is no keyboard trap: Esc then Tab leaves it, unchanged.
    before = editor.get_attribute("value")
    editor.send_keys(Keys.ESCAPE, Keys.TAB)
    b.until("focus left the editor", lambda d: d.switch_to.active_element.get_attribute("id") != "editor-text")
    assert editor.get_attribute("value") == before
    b.click("#editor-dryrun")
    b.until_text("#editor-result", "Dry run refused")
    assert not b.find("#editor-apply").is_enabled(), "Apply stays refused after a failed dry run"

    # ------------------------------------------------------------ 3. fix, dry run, apply
    step(3, "fix it, dry run, apply: a new revision shows in History")
    editor.send_keys(Keys.CONTROL, Keys.END)
    editor.send_keys(Keys.BACKSPACE * len(BROKEN))
    editor.send_keys(FIX)
    b.until_text("#editor-check", "No errors in " + CRITERION)
    assert not b.find("#editor-apply").is_enabled(), "Apply waits for a dry run"
    b.find("#editor-message").send_keys("a comment, from the browser test")
    b.click("#editor-dryrun")
    b.until_text("#editor-result", "Dry run passed: 1 file(s) would change")
    assert "MODIFIED " + CRITERION in b.text("#editor-result")
    b.click("#editor-apply")
    applied = first_revision + 1
    b.until_text("#editor-result", f"Applied as revision {applied}")
    b.until("the serving revision updated", lambda d: d.find_element(By.ID, "policies-revision").get_attribute("textContent") == str(applied))
    status, served = api("GET", f"/api/policies/revisions/{applied}")
    assert any(f["path"] == CRITERION and f["content"].rstrip("\n").endswith(FIX) for f in served["set"]), "the API serves the edit"
    b.tab("history")
    row = b.until("revision %d in History" % applied, lambda d: d.find_elements(By.CSS_SELECTOR, f'#history tr[data-revision="{applied}"]'))[0]
    for needle in ("a comment, from the browser test", "browser-test", "API", "MODIFIED " + CRITERION, "serving"):
        assert needle in row.text, f"{needle!r} not in {row.text!r}"
    b.click(f'#history tr[data-revision="{applied}"] td:nth-child(6) button')
    b.until_text("#diff-view", "+" + FIX)
    assert b.find("#diff-view .add").text == "+" + FIX, b.text("#diff-view")

    # ------------------------------------------------------------ 4. try it
    step(4, "Try it on a demo commerce: the trace names the criterion, engine and chosen user")
    b.tab("try")
    b.find("#try-search").send_keys("Don Pepe")
    b.click("#try-search-go")
    b.click(f'#try-commerces button[data-id="{commerce["id"]}"]')
    b.until_text("#try-commerce-name", commerce["name"])
    b.click("#try-run")
    b.until_text("#try-chosen", "Chosen: Maria Gonzalez")
    criterion = b.text('#try-path li[data-criterion="PREFERRED_CONTACT"]')
    assert "Criterion PREFERRED_CONTACT" in criterion and "engine RHAI" in criterion and "MATCHED" in criterion, criterion
    assert "Maria Gonzalez: kept" in criterion, criterion
    assert "policy preferred_contact" in b.text("#try-chosen"), b.text("#try-chosen")
    assert b.text("#try-status") == "READY"
    version = next(p["version"] for p in api("GET", "/api/policies")[1]["policies"] if p["name"] == "preferred_contact")
    assert "version " + version[:12] in criterion, "the trace shows the applied version"

    # ------------------------------------------------------------ 5. replay
    step(5, "replay a change over the recent decisions: the counts match the API's report")
    b.tab("editor")
    b.until("the editor shows the applied criterion", lambda d: FIX in d.find_element(By.ID, "editor-text").get_attribute("value"))
    # Others first: the commerce rep (a primary phone reaches WhatsApp) wins.
    d.execute_script("""
        const t = document.getElementById('editor-text');
        t.focus();
        t.setSelectionRange(t.value.indexOf('owners + others'), t.value.indexOf('owners + others') + 15);
    """)
    b.find("#editor-text").send_keys("others + owners")
    b.until_text("#editor-check", "No errors in " + CRITERION)
    b.until_text("#editor-drafts", "Edited, not applied: " + CRITERION)
    b.tab("replay")
    limit = b.find("#replay-limit")
    limit.clear()
    limit.send_keys("100")
    b.click("#replay-run")
    b.until_text("#replay-status", "DONE", timeout=WAIT * 4)
    job_id = b.text("#replay-id")
    status, job = api("GET", f"/api/policies/replays/{job_id}")
    assert status == 200 and job["status"] == "DONE", job
    shown = b.counts("#replay-counts")
    assert shown == {k: job[k] for k in ("total", "evaluated", "changed", "unchanged", "errors")}, f"page {shown} vs API {job}"
    changes = b.counts("#replay-changes")
    assert changes["target"] == job["changes"]["target"] and changes["status"] == job["changes"]["status"], (changes, job["changes"])
    assert job["total"] >= 4 and job["changed"] >= 4, f"the four WhatsApp creates change target: {job}"
    progress = d.execute_script("const p = document.getElementById('replay-progress'); return [p.value, p.max]")
    assert progress[0] == progress[1] == job["total"], progress
    rows = d.find_elements(By.CSS_SELECTOR, "#replay-result tr[data-activity]")
    assert len(rows) == len(job["samples"]) and rows, "one row a sample"
    first = rows[0].text
    assert "Maria Gonzalez" in first and "Juan Perez" in first, f"before/after names: {first}"
    link = rows[0].find_element(By.CSS_SELECTOR, "a")
    assert link.get_attribute("href").endswith("#activity=" + job["samples"][0]["activityId"])
    # A sample's link opens Try it on that activity's stored decision.
    sample = job["samples"][0]["activityId"]
    b.click(f'#replay-result tr[data-activity="{sample}"] a')
    b.until("Try it on the sample", lambda d: d.find_element(By.ID, "panel-try").is_displayed())
    b.until_text("#try-result h3", "stored decision input of activity " + sample)
    b.until_text("#try-chosen", "Chosen: Maria Gonzalez")
    b.click("#try-candidate")
    b.click("#try-activity-run")
    b.until_text("#try-result h3", "with the editor's changes")
    b.until_text("#try-chosen", "Chosen: Juan Perez")

    step("5b", "the fixtures with the change: the page shows the API's pass/fail")
    b.tab("tests")
    b.click("#tests-run")
    summary = b.until_text("#tests-summary", "passed").text
    draft = d.execute_script("return document.getElementById('editor-text').value")
    status, report = api("POST", "/api/policies/tests", {"files": [{"path": CRITERION, "content": draft}]})
    assert status == 200, report
    assert summary == f"{report['passed']} passed, {report['failed']} failed", (summary, report)
    assert report["failed"] >= 1, "others first breaks the WhatsApp fixture"
    failing = next(r["name"] for r in report["results"] if not r["ok"])
    assert "FAIL" in b.text("#tests-result tbody") and failing in b.text("#tests-result tbody")

    step("5c", "install the change as a shadow set, watch its counts refresh with a live create, end it")
    b.tab("shadow")
    b.until_text("#shadow-none", "No shadow set")
    b.find("#shadow-message").send_keys("others first, in shadow")
    b.click("#shadow-install")
    b.until_text("#shadow-result", "others first, in shadow")
    assert b.counts("#shadow-counts")["evaluated"] == 0
    status, body = api("POST", "/api/activities", {
        "type": "MESSAGE", "channel": "WHATSAPP", "reason": "Browser test, shadowed", "commerce_id": commerce["id"],
        "idempotency_key": f"browser-test-shadow-{time.time_ns()}", "scheduled_at": "2025-01-16T09:00:00.000Z",
    })
    assert status == 201, body
    b.until("the shadow counts refreshed", lambda d: b.counts("#shadow-counts").get("disagreed") == 1)
    shown = b.counts("#shadow-counts")
    status, shadow = api("GET", "/api/policies/shadow")
    assert shown == {k: shadow[k] for k in ("evaluated", "agreed", "disagreed", "errors", "dropped")}, (shown, shadow)
    assert "Juan Perez" in b.text("#shadow-result tr[data-activity]"), "the disagreement names the shadow's user"
    b.click("#shadow-end")
    b.until("the confirmation", lambda d: d.find_element(By.ID, "confirm").is_displayed())
    b.click("#confirm-ok")
    b.until_text("#shadow-none", "No shadow set")
    assert api("GET", "/api/policies/shadow")[0] == 404

    b.tab("editor")
    b.click("#editor-revert")
    b.until_text("#editor-drafts", "No changes.")

    # ------------------------------------------------------------ 6. restore
    step(6, "restore the previous revision, with a confirmation")
    b.tab("history")
    b.click(f'#history tr[data-revision="{first_revision}"] button[data-restore]')
    b.until("the confirmation", lambda d: d.find_element(By.ID, "confirm").is_displayed())
    assert f"Restore revision {first_revision}?" in b.text("#confirm-text")
    b.click("#confirm-ok")
    restored = applied + 1
    b.until_text("#restore-result", f"Restored revision {first_revision} as revision {restored}")
    row = b.until("the restore in History", lambda d: d.find_elements(By.CSS_SELECTOR, f'#history tr[data-revision="{restored}"]'))[0]
    assert "RESTORE" in row.text and "serving" in row.text, row.text
    status, listing = api("GET", "/api/policies")
    assert listing["revision"] == restored
    status, detail = api("GET", f"/api/policies/revisions/{restored}")
    assert next(f["content"] for f in detail["set"] if f["path"] == CRITERION) == original, "the original criterion serves again"

    # ------------------------------------------------------------ phone width
    step(7, "readable at 390x844: no horizontal scroll of the page")
    for width, height in ((390, 844), (1280, 800)):
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
        for name in ("policies", "editor", "try", "replay", "history"):
            b.tab(name)
            b.until(f"{name} fits {width} px", lambda d: d.execute_script(
                "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"))
        d.save_screenshot(os.path.join(ARTIFACTS, f"console-{width}.png"))
    d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    console_violations = b.csp_violations()
    assert not console_violations, f"CSP violations on /console: {console_violations}"

    # ------------------------------------------------------------ an API key
    step("7b", "sign out, then sign in with an API key (sent as x-api-key, tenant from the key)")
    status, key = api("POST", "/api/api-keys", {"name": "browser test", "permissions": ["MANAGE_ACTIVITY_CONFIG", "VIEW_ACTIVITIES"]})
    assert status == 201, key
    b.click("#signout")
    b.until("signed out", lambda d: d.find_element(By.ID, "signin").is_displayed() and not d.find_element(By.ID, "app").is_displayed())
    assert d.execute_script("return sessionStorage.length") == 0, "sign-out forgets the credential"
    b.find("#signin-token").send_keys(key["plaintextKey"], Keys.ENTER)
    b.until_text("#session-who", "Signed in as API key")
    b.until("the criterion listed with the key", lambda d: d.find_elements(By.CSS_SELECTOR, f'#policies-tenant tr[data-path="{CRITERION}"]'))

    # ------------------------------------------------------------ /docs
    step(8, "/docs renders the operations list")
    d.get(BASE + "/docs")
    b.until("the operations", lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 40, timeout=WAIT * 2)
    paths = [e.text for e in d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")]
    assert "/api/activities" in paths and "/api/policies/changes" in paths, paths[:10]
    docs_violations = b.csp_violations()
    assert not docs_violations, f"CSP violations on /docs: {docs_violations}"
    d.save_screenshot(os.path.join(ARTIFACTS, "docs.png"))

    # ------------------------------------------------------------ network and CSP
    step(9, "network log: same origin only; the CSP header on the pages; no CSP violation logged")
    b.drain_logs()
    foreign = [r["url"] for r in b.network if not (r["url"].startswith(origin + "/") or r["url"].startswith("data:"))]
    assert not foreign, f"requests to another origin: {foreign}"
    assert not [r["url"] for r in b.network if TOKEN in r["url"] or key["plaintextKey"] in r["url"]], "a credential in a URL"
    assert len(b.network) > 20, f"the network log was recorded ({len(b.network)} requests)"
    checks = [r for r in b.network if r["url"] == BASE + "/api/policies/check" and r["method"] == "POST"]
    assert len(checks) >= 3, f"the editor checks as you type through POST /api/policies/check ({len(checks)} calls)"
    for page in ("/console", "/docs"):
        res = b.responses.get(BASE + page)
        assert res, f"no response recorded for {page}"
        csp = res["headers"].get("content-security-policy", "")
        for directive in ("script-src 'self'", "frame-ancestors 'none'"):
            assert directive in csp, f"{page}: {directive!r} not in {csp!r}"
        assert "unsafe-eval" not in csp and "unsafe-inline" not in csp.split("style-src")[0], csp
    csp_logged = [e["message"] for e in b.console if "Content Security Policy" in e["message"] or "Content-Security-Policy" in e["message"]]
    assert not csp_logged, f"CSP violations logged: {csp_logged}"
    print(f"  network: {len(b.network)} requests, all to {origin}", flush=True)


def save_failure(b):
    os.makedirs(ARTIFACTS, exist_ok=True)
    try:
        b.d.save_screenshot(os.path.join(ARTIFACTS, "failure.png"))
    except Exception as e:  # noqa: BLE001 - best effort, the report matters more
        print(f"  (no screenshot: {e})")
    try:
        b.drain_logs()
        with open(os.path.join(ARTIFACTS, "page.html"), "w") as f:
            f.write(b.d.page_source)
    except Exception as e:  # noqa: BLE001
        print(f"  (no page source: {e})")
    with open(os.path.join(ARTIFACTS, "console.log"), "w") as f:
        for e in b.console:
            f.write(f"{e.get('level')} {e.get('message')}\n")
        f.write("csp violations: " + json.dumps(b.csp_violations()) + "\n")
    with open(os.path.join(ARTIFACTS, "network.log"), "w") as f:
        for r in b.network:
            f.write(f"{r['method']} {r['url']}\n")


def main():
    os.makedirs(ARTIFACTS, exist_ok=True)
    b = Browser()
    try:
        run(b)
    except Exception:
        traceback.print_exc()
        os.makedirs(ARTIFACTS, exist_ok=True)
        with open(os.path.join(ARTIFACTS, "failure.txt"), "w") as f:
            traceback.print_exc(file=f)
        save_failure(b)
        print(f"browser test: FAILED; screenshot, console log, network log and page in {ARTIFACTS}", file=sys.stderr)
        return 1
    finally:
        b.d.quit()
    print("browser test: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
