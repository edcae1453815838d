"""Open a Snakemake report in headless Chromium, show every result item, and screenshot each.

Used by tests/workflow/test_workflow.py and by hand on a real report:

    python tests/support/report_browser.py results/report.html --out report-shots/

Needs the ``playwright`` package and a Chromium binary (Debian: ``apt-get install chromium``;
the path can be given with ``--chromium`` or ``SUCCESSOR_HEADS_CHROMIUM``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
from pathlib import Path


def find_chromium() -> str | None:
    """A Chromium executable: ``$SUCCESSOR_HEADS_CHROMIUM``, else ``chromium``/``chromium-browser``
    /``google-chrome`` on PATH, else None."""
    env = os.environ.get("SUCCESSOR_HEADS_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[-80:]


def screenshot_report(report: str | Path, out_dir: str | Path, chromium: str, width: int = 1500,
                      height: int = 1000) -> list[dict]:
    """Click through every category and every item of ``report``; one PNG per item in ``out_dir``.

    Returns one dict per item: ``category``, ``item``, ``kind`` (``image`` for figures,
    ``frame`` for HTML, ``other`` for tables, which the report offers for download), ``ok``
    (the figure decoded with a width > 0, or the frame has text) and ``screenshot`` (path).
    The landing page is ``out_dir/00_landing.png``. Categories with subcategories (one per
    model) are opened through their first level only when the report lists files there.
    """
    from playwright.sync_api import sync_playwright

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    url = Path(report).resolve().as_uri()
    items = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url)
            page.wait_for_selector("text=RESULTS", timeout=30_000)
            page.screenshot(path=str(out / "00_landing.png"))
            for path in _leaf_menus(page, url, []):
                _open(page, url, path)
                for name in _item_names(page):
                    _open(page, url, path)  # a fresh page, so nothing shown before lingers
                    try:
                        items.append(_show_item(page, " / ".join(path), name, out, len(items) + 1))
                    except Exception as e:  # noqa: BLE001  (one bad item must not hide the others)
                        items.append({"category": " / ".join(path), "item": name, "kind": "error",
                                      "ok": False, "screenshot": "", "error": f"{type(e).__name__}: {e}"})
        finally:
            browser.close()
    return items


def _menu_entries(page) -> list[str]:
    """Texts of the sidebar's menu entries below its "Results" heading (categories, or the
    subcategories of the category shown)."""
    spans = page.locator("xpath=//li[normalize-space()='Results']/following-sibling::li//a//span")
    if not spans.count():
        spans = page.locator("li a span")
    return [t.strip() for t in spans.all_inner_texts() if t.strip()]


def _item_names(page) -> list[str]:
    rows = page.locator("tr", has=page.locator("a[iconname=eye]"))
    return [rows.nth(k).locator("td").first.inner_text().strip() for k in range(rows.count())]


def _open(page, url: str, path: list[str]) -> None:
    page.goto(url)
    page.wait_for_selector("text=Workflow", timeout=30_000)
    for text in path:
        page.locator("li a").get_by_text(text, exact=True).first.click()  # the sidebar's entries only
        page.wait_for_timeout(300)


def _leaf_menus(page, url: str, path: list[str], depth: int = 0) -> list[list[str]]:
    """Every menu path (category, then subcategory) that ends in a list of files."""
    _open(page, url, path)
    if path and _item_names(page):
        return [path]
    if depth >= 2:
        return []
    entries = _menu_entries(page)
    skip = {"Workflow", "Statistics", "About", *path}
    out = []
    for entry in entries:
        if entry not in skip:
            out += _leaf_menus(page, url, [*path, entry], depth + 1)
    return out


def _show_item(page, category: str, name: str, out: Path, number: int) -> dict:
    row = page.locator("tr", has=page.get_by_text(name, exact=True))
    row.locator("a[iconname=eye]").first.click()
    page.wait_for_timeout(800)
    kind, ok = "other", False
    suffix = Path(name).suffix.lower()
    if suffix in (".png", ".svg", ".jpg", ".jpeg", ".gif"):
        kind = "image"
        # the report's own icons are inline SVG data; a figure is the other kind of image
        figure = "img:not([src^='data:image/svg+xml;charset=utf8'])"
        try:
            page.wait_for_function(
                f"() => [...document.querySelectorAll(\"{figure}\")].some(e => e.complete && e.naturalWidth > 0)",
                timeout=15_000)
            ok = True
        except Exception:  # noqa: BLE001  (timeout: the figure never decoded)
            ok = False
    elif suffix in (".html", ".htm", ".pdf"):
        frames = page.locator("iframe")
        kind = "frame"
        ok = bool(frames.count()) and bool(frames.first.content_frame.locator("body").inner_text().strip())
    else:
        ok = True  # tables and other data: listed for download, not drawn by the report
    shot = out / f"{number:02d}_{_slug(category)}_{_slug(name)}.png"
    page.screenshot(path=str(shot))
    return {"category": category, "item": name, "kind": kind, "ok": ok, "screenshot": str(shot)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report")
    ap.add_argument("--out", default="report-shots")
    ap.add_argument("--chromium", default=None)
    args = ap.parse_args()
    chromium = args.chromium or find_chromium()
    if not chromium:
        raise SystemExit("no Chromium found: install it (Debian: apt-get install chromium) or pass --chromium PATH")
    items = screenshot_report(args.report, args.out, chromium)
    for it in items:
        print(f"{'ok ' if it['ok'] else 'BAD'} {it['kind']:6s} {it['category']}: {it['item']} -> {it['screenshot']}")
    bad = [it for it in items if not it["ok"]]
    print(f"{len(items)} items, {len(bad)} not shown")
    raise SystemExit(1 if bad or not items else 0)


if __name__ == "__main__":
    main()
