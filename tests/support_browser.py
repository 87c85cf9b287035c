"""How the browser tests launch Debian's Chromium (Playwright cannot download browsers here), shared by the
e2e tests and the operations tests' browser through the proxy."""

from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the networking flags Chromium floods the closed network with update and sync requests.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
