"""cattag report: a tag output -> one self-contained HTML page (figures, distributions, review, failures, map)."""

from __future__ import annotations

import argparse
import pathlib

from report.build import ReportFacts, build


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tags", required=True, help="a `cattag tag` --output folder")
    parser.add_argument("--output", default="report.html", help="the HTML file to write (default %(default)s)")
    parser.add_argument("--model", help="the model that tagged it (a directory or a pretrained name): its card, "
                                        "metrics and plots join the report")
    parser.add_argument("--db", help="a database the tags were loaded into: the report shows sample similar tracks")
    parser.add_argument("--model-version", help="whose rows to report when the output holds several "
                                                "(default: the most recently tagged)")


def main(argv: list[str] | None = None) -> ReportFacts:
    parser = argparse.ArgumentParser(prog="cattag report")
    add_arguments(parser)
    args = parser.parse_args(argv)
    output = pathlib.Path(args.output)
    facts = write_report(args.tags, output, model=args.model, db=args.db, model_version=args.model_version)
    print(f"report: {facts.tagged:,} tracks tagged, {facts.flagged:,} flagged for review, {facts.failed:,} failed "
          f"(model {facts.model_version}) -> {output.resolve()} ({output.stat().st_size // 1024:,} kB; "
          "open it in a browser)")
    return facts


def write_report(tags: str, output: pathlib.Path, *, model: str | None = None, db: str | None = None,
                 model_version: str | None = None) -> ReportFacts:
    html, facts = build(tags, model_dir=model, db_url=db, model_version=model_version)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(html, encoding="utf-8")
    return facts
