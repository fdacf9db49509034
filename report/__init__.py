"""`cattag report`: one self-contained HTML page about a tag output, for the people who run the catalogue.

    report/summary.py  one streaming pass over the tag files and _errors/: counts, histograms, samples
    report/charts.py   inline SVG charts (bars, histogram, scatter map)
    report/page.py     the HTML page: figures, sections, sortable and paged tables, inline CSS and JS
    report/build.py    a tag output (+ model, + database) -> the page and its headline facts
"""
