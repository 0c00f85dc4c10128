"""``report.html``: one static page for a run folder — each photo, its top classes with their
probabilities, and every method's overlay side by side — read from the folder's summary.json. The
page refers to the overlays beside it, so the folder can be copied or served as it is."""

from __future__ import annotations

import html
from pathlib import Path

from .atomic import write_atomically
from .summary_writer import read_summary

_STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}
section{margin-bottom:2em;border-top:1px solid #ccc;padding-top:.5em}
figure{display:inline-block;margin:.3em;vertical-align:top}
figure img{max-width:320px;display:block}figcaption{font-size:.85em;max-width:320px}
table{border-collapse:collapse}td{padding:0 .8em 0 0}.failed{color:#a00}"""
# sets data-images="loaded/total" on <body> once the page has loaded, for checking in a browser
_CHECK = """window.addEventListener("load",function(){var i=document.images,n=0;
for(var k=0;k<i.length;k++){if(i[k].complete&&i[k].naturalWidth>0){n++;}}
document.body.setAttribute("data-images",n+"/"+i.length);});"""


def write_report(run_dir: Path) -> Path:
    """Write ``run_dir``/report.html from ``run_dir``/summary.json; returns its path."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir / "summary.json")
    by_image: dict[str, list[dict]] = {}
    for record in summary.get("results", []):
        by_image.setdefault(record["image"], []).append(record)
    tops = {entry["image"]: entry.get("top", []) for entry in summary.get("images", [])}
    parts = [f"<h1>exbp: {html.escape(Path(summary.get('model', '')).name)}</h1>",
             f"<p>{len(by_image)} image(s), {len(summary.get('results', []))} map(s), "
             f"{len(summary.get('failures', []))} failure(s)</p>"]
    for image, records in by_image.items():
        parts.append(f"<section><h2>{html.escape(Path(image).name)}</h2>")
        if tops.get(image):
            rows = "".join(f"<tr><td>{html.escape(str(t['label']))}</td><td>{t['probability']:.1%}</td></tr>"
                           for t in tops[image])
            parts.append(f"<table>{rows}</table>")
        for record in records:
            overlay = next((f for f in record["files"] if f.endswith("_overlay.png")), None)
            if overlay is None:
                continue
            caption = f"{record['label']} ({record['probability']:.1%}) · {record['method']}"
            parts.append(f'<figure><img src="{html.escape(_relative(overlay, run_dir))}" '
                         f'alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}'
                         "</figcaption></figure>")
        parts.append("</section>")
    for failure in summary.get("failures", []):
        parts.append(f'<p class="failed">{html.escape(Path(failure["image"]).name)}: '
                     f"{html.escape(failure['error'])}</p>")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>exbp report</title>"
            f"<style>{_STYLE}</style><script>{_CHECK}</script></head><body>{''.join(parts)}"
            "</body></html>\n")
    path = run_dir / "report.html"
    return write_atomically(path, lambda file: file.write(page.encode("utf-8")))


def _relative(file: str, run_dir: Path) -> str:
    """A written file's path from the run folder (the files lie in it)."""
    return Path(file).name if Path(file).parent.resolve() == run_dir.resolve() else str(Path(file).resolve())
