"""Browser tests: real Chromium through Playwright against the real gunicorn."""
