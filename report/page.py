"""The report as one self-contained HTML page: inline CSS, inline SVG, PNGs as data URIs, and a few
lines of inline JavaScript that sort and page the long tables. Nothing is fetched when it is viewed.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape

# Sorting (click a header; numbers as numbers) and paging (PAGE rows, Previous/Next) for every
# table.data. Without JavaScript the tables show whole, unsorted.
_SCRIPT = """
document.querySelectorAll('table.data').forEach(function (table) {
  var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows), page = 0;
  var size = parseInt(table.dataset.pageSize || '25', 10);
  var pager = document.createElement('div'); pager.className = 'pager';
  var prev = document.createElement('button'), next = document.createElement('button');
  var info = document.createElement('span'); info.className = 'page-info';
  prev.textContent = 'Previous'; next.textContent = 'Next';
  pager.append(prev, info, next); table.after(pager);
  function show() {
    var pages = Math.max(1, Math.ceil(rows.length / size));
    page = Math.min(Math.max(page, 0), pages - 1);
    body.replaceChildren.apply(body, rows.slice(page * size, (page + 1) * size));
    info.textContent = rows.length ? (page * size + 1) + '-' + Math.min(rows.length, (page + 1) * size) +
      ' of ' + rows.length : 'none';
    prev.disabled = page === 0; next.disabled = page >= pages - 1;
    pager.hidden = rows.length <= size;
  }
  prev.onclick = function () { page--; show(); };
  next.onclick = function () { page++; show(); };
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
    th.onclick = function () {
      var ascending = th.dataset.order !== 'asc';
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) { delete c.dataset.order; });
      th.dataset.order = ascending ? 'asc' : 'desc';
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.sort || a.cells[col].textContent;
        var y = b.cells[col].dataset.sort || b.cells[col].textContent;
        var nx = parseFloat(x), ny = parseFloat(y);
        var order = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return ascending ? order : -order;
      });
      page = 0; show();
    };
  });
  show();
});
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.subtitle { color: #555; margin-top: 0; }
.figures { display: flex; flex-wrap: wrap; gap: 0.8em; }
.figure { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1em; min-width: 8em; }
.figure .value { display: block; font-size: 1.6em; font-weight: 600; }
.figure .name { color: #555; font-size: 0.9em; }
.figure.warn .value { color: #b45309; } .figure.bad .value { color: #b91c1c; }
.row { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border-bottom: 1px solid #eee; padding: 0.25em 0.7em; text-align: left; vertical-align: top; }
th { background: #f6f6f6; } table.data th { cursor: pointer; user-select: none; }
th[data-order=asc]::after { content: " \\25B2"; } th[data-order=desc]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pager { margin-bottom: 1em; } .pager button { margin: 0 0.5em; }
.note { color: #555; font-size: 0.9em; } .empty { color: #777; font-style: italic; }
img.plot { max-width: 100%; border: 1px solid #eee; }
"""


def figure(name: str, value: str, *, figure_id: str, level: str = "") -> str:
    return (f'<div class="figure {level}" id="{figure_id}"><span class="value">{escape(value)}</span>'
            f'<span class="name">{escape(name)}</span></div>')


def table(columns: Sequence[str], rows: Sequence[Sequence], *, table_id: str, numeric: Sequence[str] = (),
          page_size: int | None = 25) -> str:
    """A table; with page_size, sortable and paged (class "data")."""
    if not rows:
        return f'<p class="empty" id="{table_id}">none</p>'
    attributes = f' class="data" data-page-size="{page_size}"' if page_size else ""
    head = "".join(f"<th>{escape(column)}</th>" for column in columns) if any(columns) else ""
    body = []
    for row in rows:
        cells = []
        for column, value in zip(columns, row, strict=True):
            if column in numeric:
                sort = "" if value is None else f' data-sort="{value}"'
                cells.append(f'<td class="num"{sort}>{"" if value is None else escape(_format(value))}</td>')
            else:
                cells.append(f"<td>{'' if value is None else escape(str(value))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table id="{table_id}"{attributes}>{f"<thead><tr>{head}</tr></thead>" if head else ""}<tbody>{"".join(body)}</tbody></table>'


def png(data: bytes, *, alt: str, image_id: str) -> str:
    return (f'<img class="plot" id="{image_id}" alt="{escape(alt)}" '
            f'src="data:image/png;base64,{base64.b64encode(data).decode()}">')


def section(title: str, body: str, *, section_id: str, note: str = "") -> str:
    note_html = f'<p class="note">{note}</p>' if note else ""
    return f'<section id="{section_id}"><h2>{escape(title)}</h2>{note_html}{body}</section>'


def page(title: str, subtitle: str, sections: Sequence[str]) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
            f'<h1>{escape(title)}</h1><p class="subtitle">{escape(subtitle)}</p>'
            f'{"".join(sections)}<script>{_SCRIPT}</script></body></html>\n')


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)
