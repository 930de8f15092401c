"""Screenshots of the operator console with data, light and dark.

Starts a throwaway redis-server and the real gunicorn, seeds endorsements from several
allied sites (plus back-dated timeline buckets so the hour and day charts have a shape),
strikes two, signs in through the form and writes PNGs (not committed)::

    python scripts/console_screenshots.py [--out /tmp/undersign-console-shots]
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import requests  # noqa: E402
from checks import altcha_for  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402
from servers import CHROMIUM, CHROMIUM_ARGS, Gunicorn, RedisServer  # noqa: E402

STATEMENT = "dongelek-ystel"
TOKEN = secrets.token_urlsafe(24)  # throwaway, for this run only
ORIGINS = ["https://ally.example", "https://news.example.org", "https://rights-watch.example"]
NAMES = [
    ("Aigerim Sultanova", "KZ"),
    ("Jonas Weber", "DE"),
    ("Marie Laurent", "FR"),
    ("Dmitry Ivanov", ""),
    ("Yerlan Abenov", "KZ"),
    ("Sofia Rossi", "IT"),
    ("Nurlan Tokayev", "KZ"),
    ("Anna Kowalska", "PL"),
    ("Erik Lindqvist", "SE"),
    ("Dana Nurpeisova", "KZ"),
    ("Lucas Martin", "FR"),
    ("Aliya Seitkali", "KZ"),
]


def seed(service: str, redis: Any) -> None:
    url = f"{service}/api/v1/statements/{STATEMENT}/endorsements"
    for i in range(36):
        name, country = NAMES[i % len(NAMES)]
        body = {"name": f"{name}" if i < 12 else f"{name} {i}", "email": f"p{i}@example.org"}
        body |= {"consent": True, "country": country, "public": i % 3 != 0}
        body["altcha"] = altcha_for(service)
        headers = {"Origin": ORIGINS[i % 4]} if i % 4 < 3 else {}
        requests.post(url, json=body, headers=headers, timeout=5).raise_for_status()
        time.sleep(0.02)
    # Back-dated buckets (a throwaway database) so the longer ranges have a shape.
    now = int(time.time())
    key = f"us:{{{STATEMENT}}}"
    for minutes_ago in range(1, 60):
        n = max(0, int(6 + 5 * ((minutes_ago * 7) % 11) / 10 - minutes_ago / 12))
        bucket = now - now % 60 - minutes_ago * 60
        redis.hincrby(f"{key}:tl:m", bucket, n)
    for hours_ago in range(1, 72):
        bucket = now - now % 3600 - hours_ago * 3600
        redis.hincrby(f"{key}:tl:h", bucket, (hours_ago * 37) % 90 + 20)
    for days_ago in range(1, 12):
        bucket = now - now % 86400 - days_ago * 86400
        redis.hincrby(f"{key}:tl:d", bucket, 2400 - days_ago * 160 + (days_ago * 53) % 300)
    redis.incrby(f"{key}:count", 4237)
    redis.hincrby(f"{key}:by_source", "https://ally.example", 2100)
    redis.hincrby(f"{key}:by_source", "https://news.example.org", 1200)
    redis.hincrby(f"{key}:by_source", "direct", 937)
    for code, n in (("KZ", 2900), ("DE", 420), ("FR", 310), ("PL", 190), ("SE", 110)):
        redis.hincrby(f"{key}:by_country", code, n)


def strike_two(service: str) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    base = f"{service}/api/v1/admin/statements/{STATEMENT}"
    rows = requests.get(f"{base}/endorsements?limit=10", headers=headers, timeout=5).json()
    for row, reason in zip(rows["endorsements"][2:4], ("spam", ""), strict=True):
        url = f"{base}/endorsements/{row['id']}/strike"
        requests.post(url, json={"reason": reason}, headers=headers, timeout=5).raise_for_status()


def settle(page: Page) -> None:
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(900)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out", default=str(Path(tempfile.gettempdir()) / "undersign-console-shots")
    )
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="undersign-console-"))
    redis_server = RedisServer(folder)
    redis_server.start()
    env = {
        "WIDGET_REDIS_URL": redis_server.url,
        "WIDGET_SECRET_KEY": "screenshots-secret-key-0123456789abcdef0123",
        "WIDGET_ALLOWED_ORIGINS": ",".join(ORIGINS),
        "WIDGET_ENDORSE_LIMIT": "100000/minute",
        "WIDGET_NETWORK_LIMIT": "100000/minute",
        "WIDGET_CHALLENGE_LIMIT": "100000/minute",
        "WIDGET_ADMIN_TOKEN": TOKEN,
    }
    service = Gunicorn(env, workers=2, folder=folder)
    service.start()
    try:
        seed(service.url, redis_server.client())
        strike_two(service.url)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            for scheme in ("light", "dark"):
                for name, viewport in (("desktop", (1280, 900)), ("mobile", (390, 844))):
                    context = browser.new_context(
                        color_scheme=scheme,  # type: ignore[arg-type]
                        viewport={"width": viewport[0], "height": viewport[1]},
                        device_scale_factor=1,
                    )
                    page = context.new_page()
                    page.goto(f"{service.url}/admin/s/{STATEMENT}")
                    if name == "desktop":
                        page.screenshot(path=str(out / f"login-{scheme}.png"))
                    page.fill("#token", TOKEN)
                    page.click("button[type=submit]")
                    page.wait_for_selector("#entries tbody tr[data-eid]")
                    settle(page)
                    page.screenshot(
                        path=str(out / f"dashboard-{scheme}-{name}.png"), full_page=True
                    )
                    if name == "desktop":
                        page.click("#tab-hour")
                        page.wait_for_timeout(300)
                        page.locator("#chart").screenshot(
                            path=str(out / f"chart-hour-{scheme}.png")
                        )
                        page.click("#tab-day")
                        page.wait_for_timeout(300)
                        page.locator("#chart").screenshot(path=str(out / f"chart-day-{scheme}.png"))
                        page.goto(f"{service.url}/admin")
                        settle(page)
                        page.screenshot(path=str(out / f"overview-{scheme}.png"))
                    context.close()
            browser.close()
    finally:
        service.stop()
        redis_server.stop()
    for path in sorted(out.glob("*.png")):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
