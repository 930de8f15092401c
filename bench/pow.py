"""Bench: how long the widget's proof of work takes in Chromium, for a few costs.

For each ``WIDGET_POW_COST`` level, a throwaway redis-server and gunicorn (production
config, proof of work on at that cost) serve the hosted page; headless Chromium (Debian's,
as the tests use it) opens it and, inside the page, fetches a challenge and solves it with
the widget's own Web Worker (``static/pow.js``), ``--runs`` times. Printed: the median and
p90 solving time on this machine and with Chromium's CPU throttled ``--throttle`` times (the
"mid-tier mobile" factor Lighthouse uses is 4), and how many tries (PBKDF2 derivations) a
solution took on average.

    python bench/pow.py [--costs 1000,3000,5000] [--runs 20] [--throttle 4]

The throttle slows the page's main thread; WebCrypto's work runs on other threads, so the
throttled figure is a lower bound for a slow phone. The README's default cost is chosen
from the unthrottled median times the throttle factor.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from common import redis_server

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent / "tests"))

from api import gunicorn  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from servers import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

STATEMENT = "dongelek-ystel"
SECRET = "bench-secret-not-for-production-0123456789abcdef"  # noqa: S105 - throwaway

SOLVE = """async () => {
  const w = document.getElementById('w');
  const api = w.dataset.api, worker = w.dataset.pow;
  const c = await (await fetch(api + '/challenge', {cache: 'no-store'})).json();
  const t0 = performance.now();
  const solution = await new Promise((ok, no) => {
    const wk = new Worker(worker);
    wk.onmessage = e => { wk.terminate(); e.data ? ok(e.data) : no('no solution'); };
    wk.onerror = e => { wk.terminate(); no(String(e.message)); };
    wk.postMessage(c.parameters);
  });
  return {ms: performance.now() - t0, tries: solution.counter + 1};
}"""


def level(cost: int, runs: int, throttle: float, folder: Path) -> None:
    with redis_server(folder) as (redis_url, _):
        env = {
            "WIDGET_REDIS_URL": redis_url,
            "WIDGET_SECRET_KEY": SECRET,
            "WIDGET_POW": "on",
            "WIDGET_POW_COST": str(cost),
            "WIDGET_CHALLENGE_LIMIT": "100000/minute",
        }
        with gunicorn("widget:create_app()", env, 2, folder / f"gunicorn-{cost}.log") as server:
            url = f"http://127.0.0.1:{server.port}/s/{STATEMENT}"
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for rate in (1.0, throttle):
                    page = browser.new_page()
                    page.goto(url)
                    if rate != 1.0:
                        cdp = page.context.new_cdp_session(page)
                        cdp.send("Emulation.setCPUThrottlingRate", {"rate": rate})
                    page.evaluate(SOLVE)  # warm up: worker script and WebCrypto
                    samples = [page.evaluate(SOLVE) for _ in range(runs)]
                    times = sorted(s["ms"] for s in samples)
                    tries = statistics.mean(s["tries"] for s in samples)
                    p90 = times[int(0.9 * (len(times) - 1))]
                    label = "this machine" if rate == 1.0 else f"CPU throttled {rate:g}x"
                    print(
                        f"cost {cost:>6}  {label:<20} median {statistics.median(times):7.1f} ms"
                        f"   p90 {p90:7.1f} ms   tries {tries:5.1f}",
                        flush=True,
                    )
                    page.close()
                browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--costs", default="1000,3000,5000")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--throttle", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pow-") as tmp:
        for cost in (int(c) for c in args.costs.split(",")):
            folder = Path(tmp) / str(cost)
            folder.mkdir()
            level(cost, args.runs, args.throttle, folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
