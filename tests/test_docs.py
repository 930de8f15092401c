"""The README's deployment example stays true to the service it fronts."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def nginx_example() -> str:
    match = re.search(r"```nginx\n(.*?)```", README, re.DOTALL)
    assert match, "the README has no nginx example"
    return match.group(1)


def test_reverse_proxy_example_serves_http2_with_unbuffered_streams() -> None:
    config = nginx_example()
    assert re.search(r"^\s*http2 on;", config, re.MULTILINE), "browsers must get HTTP/2"
    assert re.search(r"^\s*listen 443 ssl;", config, re.MULTILINE)
    stream_blocks = re.findall(r"location ~ (\S+) \{(.*?)\}", config, re.DOTALL)
    assert len(stream_blocks) == 1, stream_blocks
    pattern, block = stream_blocks[0]
    assert "proxy_buffering off;" in block
    timeout = re.search(r"proxy_read_timeout (\d+)h;", block)
    assert timeout and int(timeout.group(1)) >= 1  # far above the 15 s heartbeat
    nginx_regex = re.compile(pattern)
    for path in ("/api/v1/events", "/api/v1/statements/dongelek-ystel/events"):
        assert nginx_regex.search(path), path
    for path in ("/api/v1/statements/dongelek-ystel/count", "/api/v1/statements"):
        assert not nginx_regex.search(path), path
    assert "access_log off;" in config
