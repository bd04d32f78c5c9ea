"""Drives /dashboard in Debian's Chromium (Playwright from the tools venv) against a real stepper-local.

Started by local/tests/dashboard.rs with a JSON file of what the page should show (the server's own
answers, read just before). Asserts what a person would see, clicks Redeliver, saves a screenshot.
"""

import json
import re
import sys

from playwright.sync_api import expect, sync_playwright

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def utc(iso):
    """The page's rendering of an instant: `2026-11-30 23:41:05 UTC`."""
    return iso[:19].replace("T", " ") + " UTC"


def main(path):
    spec = json.load(open(path))
    base, key = spec["base"], spec["key"]
    url = base + "/dashboard"
    secrets = [key] + spec["otherKeys"]
    requested = []
    problems = []

    # launch() starts Chromium on a fresh temporary profile of its own (user data dir), removed at close.
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=spec["chromium"], args=ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        context.on("request", lambda r: requested.append(r.url))
        page = context.new_page()
        def console(m):
            # The one 404 the page expects (no favicon) is not a problem; any other error (a failed
            # API call, a CSP violation, a script error) is.
            url = (m.location or {}).get("url", "")
            expected = m.text.startswith("Failed to load resource") and url.endswith("/favicon.ico")
            if m.type == "error" and not expected:
                problems.append("%s (%s)" % (m.text, url))

        page.on("console", console)
        page.on("pageerror", lambda e: problems.append(str(e)))

        # The key is asked once.
        page.goto(url)
        expect(page.locator("#key-form")).to_be_visible()
        expect(page.locator("#board")).to_be_hidden()
        expect(page.locator("#key-header-name")).to_have_text("x-api-key")
        page.fill("#key", key)
        page.click("#key-form button[type=submit]")
        expect(page.locator("#board")).to_be_visible()
        assert page.url == url, "the key never goes into the URL: " + page.url

        # Providers as a timeline: disabled (reason scrubbed), cooling with its reset time, exhausted.
        rows = page.locator("#provider-rows .prow")
        expect(rows).to_have_count(len(spec["providers"]))
        names = [p["name"] for p in spec["providers"]]
        assert rows.evaluate_all("rs => rs.map(r => r.dataset.provider)") == names
        by_name = {p["name"]: p for p in spec["providers"]}
        gamma = page.locator('.prow[data-provider="gamma"]')
        expect(gamma).to_have_attribute("data-state", "disabled")
        expect(gamma.locator(".state-text")).to_have_text("disabled")
        expect(gamma.locator(".reason").first).to_contain_text("[redacted]")
        alpha = page.locator('.prow[data-provider="alpha"]')
        expect(alpha).to_have_attribute("data-state", "cooling")
        reset = by_name["alpha"]["coolingDownUntil"]
        expect(alpha.locator(".state-text")).to_contain_text("cooling until " + utc(reset))
        beta = page.locator('.prow[data-provider="beta"]')
        expect(beta).to_have_attribute("data-state", "exhausted")
        expect(beta.locator(".state-text")).to_contain_text("exhausted until " + utc(by_name["beta"]["coolingDownUntil"]))

        # Today's attempts per provider, by outcome.
        expect(page.locator('#attempt-chart .arow[data-provider="gamma"] .acount')).to_contain_text("auth_invalid 1")
        alpha_attempts = page.locator('#attempt-chart .arow[data-provider="alpha"] .acount')
        expect(alpha_attempts).to_contain_text("ok 2")
        expect(alpha_attempts).to_contain_text("bad_request 1")
        expect(alpha_attempts).to_contain_text("rate_limited 1")
        expect(page.locator('#attempt-chart .arow[data-provider="beta"] .acount')).to_contain_text("quota_exhausted 1")

        # Jobs by state.
        def count(name):
            return page.locator('#job-counts [data-count="%s"] dd' % name)

        expect(count("delayed")).to_have_text("1")
        expect(count("completed today")).to_have_text("2")
        expect(count("failed today")).to_have_text("1")
        expect(count("dead-lettered")).to_have_text("1")

        # The waiting job, its next attempt and its ETA.
        waiting = spec["waiting"]
        row = page.locator('#oldest tr[data-job="%s"]' % waiting["id"])
        expect(row).to_be_visible()
        expect(row.locator(".jstatus")).to_have_text("delayed")
        expect(row).to_contain_text(utc(waiting["nextAttemptAt"]))
        eta = row.locator(".eta")
        # The poll answer carries the job's ETA, and the page shows the same instant.
        assert "etaAt" in waiting, "the poll answer of a delayed job carries etaAt: %r" % waiting
        expect(eta).to_contain_text("ETA " + utc(waiting["etaAt"]))

        # Unfinished jobs by tenant: the waiting job names its tenant, and it is the only unfinished one.
        tenant = page.locator('#tenants tr[data-tenant="acme"]')
        expect(tenant).to_be_visible()
        expect(tenant.locator("td").nth(1)).to_have_text("1")
        expect(page.locator("#tenants tbody tr")).to_have_count(1)

        # The budget projection: a row per free tier (Upstash commands, Lambda invocations, SQS requests).
        expect(page.locator("#budget-table tbody tr")).to_have_count(3)

        # Nothing secret on the page.
        text = page.locator("body").inner_text()
        for secret in secrets:
            assert secret not in text, "a secret is shown on the page"

        # The key lives in this tab's session storage only: a reload keeps it, a new tab asks again.
        assert page.evaluate("sessionStorage.getItem('stepper.apiKey')") == key
        assert page.evaluate("localStorage.length") == 0
        assert context.cookies() == []
        page.reload()
        expect(page.locator("#board")).to_be_visible()
        expect(page.locator("#key-form")).to_be_hidden()
        other = context.new_page()
        other.goto(url)
        expect(other.locator("#key-form")).to_be_visible()
        expect(other.locator("#board")).to_be_hidden()
        assert other.evaluate("sessionStorage.getItem('stepper.apiKey')") is None
        other.close()

        # A dead letter, redelivered now that its receiver is up.
        dead = spec["dead"]
        letter = page.locator('#dead-letters tr[data-job="%s"]' % dead["id"])
        expect(letter).to_be_visible()
        expect(letter).to_contain_text(dead["deliveries"][0]["target"])
        page.screenshot(path=spec["screenshot"], full_page=True)
        letter.locator("button.redeliver").click()
        expect(letter.locator(".note")).to_have_text(re.compile(r"Redelivered: 1 sent again"))
        # Delivered: the next refresh shows no dead letter.
        expect(page.locator("#dead-letters tbody")).to_contain_text("No dead letter.", timeout=15000)
        expect(count("dead-lettered")).to_have_text("0")

        for u in requested:
            for secret in secrets:
                assert secret not in u, "a secret in a requested URL: " + u
        assert not problems, "console errors (a CSP violation?): %r" % problems
        browser.close()

    print(
        "dashboard browser: %d providers shown (gamma disabled, alpha cooling until %s, beta exhausted), "
        "delayed job %s, ETA %s, dead letter redelivered, %d requests, none with the key in its URL"
        % (len(names), utc(reset), waiting["id"], waiting.get("etaAt", "not in the poll answer yet"), len(requested))
    )


if __name__ == "__main__":
    main(sys.argv[1])
