"""Render kyutai_stt/web/icon.svg into the PNG icons of the web app manifest (web/icon-192.png, web/icon-512.png),
with Debian's Chromium (the browser tests' one). Run again after changing icon.svg; tests/web/test_offline.py checks
that the committed PNGs are this rendering of the SVG."""
from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

WEB = Path(__file__).resolve().parents[1] / "kyutai_stt" / "web"
SIZES = (192, 512)
CHROMIUM = "/usr/bin/chromium"


def render(page, size: int) -> bytes:
    """The SVG drawn at size x size pixels on a transparent background, as PNG bytes."""
    svg = base64.b64encode((WEB / "icon.svg").read_bytes()).decode()
    page.set_viewport_size({"width": size, "height": size})
    page.set_content(f'<body style="margin:0"><img src="data:image/svg+xml;base64,{svg}" '
                     f'width="{size}" height="{size}" style="display:block">')
    page.wait_for_function("document.images[0].complete")
    return page.screenshot(omit_background=True)


def main() -> int:
    from PIL import Image
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox"], headless=False)
        page = browser.new_page(device_scale_factor=1)
        for size in SIZES:
            image = Image.open(io.BytesIO(render(page, size)))
            assert image.size == (size, size), image.size
            out = WEB / f"icon-{size}.png"
            image.save(out, optimize=True)
            print(f"wrote {out}")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
