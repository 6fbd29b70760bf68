"""The report as one page to look at: ``index.html`` beside the report's tables.

Sections: a summary of the run, the rank tables (Table 12a/b, then per architecture and per dataset), the paper's
values beside the run's, the second-moment diagnostics, the bootstrap intervals and Friedman tables with their
critical-difference diagrams, the maps over images (``overlays/*.png`` of the report folder), the analysis figures
of the run directory (``convergence/``, ``saturation/``, ``clip/``) and links to every file of the report.

The page is self-contained but for its pictures: inline CSS, no script, no external resource. Pictures and files are
linked by relative paths, so the report folder can be copied with its figures (analysis figures live in the run
directory: their links hold while the report folder keeps its place relative to it).
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import polars as pl

from storage.files import atomic_write_bytes, resolve
from storage.render import ARROWS, PlainTable, RankTable

__all__ = ["ANALYSES", "Summary", "write_html"]

ANALYSES = ("convergence", "saturation", "clip")  # folders of a run directory whose PNGs the page shows
_MAIN = ("table12a_means", "table12b_ranks")
_GROUPS = (("ranks_architecture_", "Per architecture"), ("ranks_dataset_", "Per dataset"))
_SECTIONS = (("paper", "Paper comparison", ("paper_comparison", "paper_agreement")),
             ("diagnostics", "Expected Grad-CAM diagnostics", ("diagnostics",)),
             ("uncertainty", "Uncertainty", ("confidence_intervals", "friedman")))
_LABELS = {"table12a_means": "Table 12a: means", "table12b_ranks": "Table 12b: ranks",
           "paper_comparison": "Paper values", "paper_agreement": "Rank agreement", "diagnostics": "M̂ per cell",
           "confidence_intervals": "Bootstrap intervals", "friedman": "Friedman and CD"}

_CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --head: #f0f3f6; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
.layout { display: grid; grid-template-columns: 16rem minmax(0, 1fr); }
nav.toc { position: sticky; top: 0; align-self: start; height: 100vh; overflow-y: auto; padding: 1rem 1rem 2rem;
          border-right: 1px solid var(--line); background: #f6f8fa; font-size: 14px; }
nav.toc .title { font-weight: 600; margin: 0 0 .6rem; }
nav.toc ol { list-style: none; margin: 0; padding: 0; }
nav.toc ol ol { padding-left: .9rem; font-size: 13px; }
nav.toc a { display: block; padding: .12rem 0; color: var(--fg); text-decoration: none; overflow-wrap: anywhere; }
nav.toc a:hover { color: var(--accent); }
main { min-width: 0; padding: 1rem 2rem 4rem; }
h1 { font-size: 1.6rem; margin: .4rem 0 1rem; }
h2 { margin: 2.5rem 0 .8rem; padding-bottom: .25rem; border-bottom: 1px solid var(--line); font-size: 1.3rem; }
h3 { margin: 1.6rem 0 .5rem; font-size: 1.05rem; }
section, figure { scroll-margin-top: 1rem; }
a { color: var(--accent); }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1.2rem; margin: 0 0 1rem; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
.warning { max-width: 60rem; padding: .5rem .8rem; background: #fff8c5; border-left: 4px solid #d4a72c; }
figure { margin: 1rem 0 1.6rem; }
figure.table figcaption { font-weight: 600; margin-bottom: .35rem; }
.scroll { width: max-content; max-width: 100%; max-height: 75vh; overflow: auto; border: 1px solid var(--line);
          border-radius: 6px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: .3rem .7rem; text-align: left; white-space: nowrap; border-bottom: 1px solid var(--line); }
thead th { position: sticky; top: 0; z-index: 1; background: var(--head); border-bottom: 2px solid #afb8c1; }
tbody th { font-weight: 500; }
tbody tr:nth-child(even) { background: #f9fafb; }
tbody tr:hover { background: #ddf4ff; }
th.num, td.num { text-align: right; }
td strong { font-weight: 700; }
ul.notes { max-width: 60rem; margin: .45rem 0 0; padding-left: 1.2rem; color: var(--muted); font-size: 13px; }
figure.table:has(+ p.files) { margin-bottom: .35rem; }
p.files { margin: 0 0 1.6rem; color: var(--muted); font-size: 13px; }
ul.files li { margin: .1rem 0; }
.pictures { display: grid; grid-template-columns: repeat(auto-fill, minmax(24rem, 1fr)); gap: 1rem 1.5rem; }
.pictures.wide { grid-template-columns: minmax(0, max-content); }
figure.picture { margin: 0; }
figure.picture img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
figure.picture figcaption { color: var(--muted); font-size: 13px; overflow-wrap: anywhere; }
@media (max-width: 800px) {
  .layout { display: block; }
  nav.toc { position: static; height: auto; border-right: 0; border-bottom: 1px solid var(--line); }
}
"""


@dataclass(frozen=True)
class Summary:
    """What the page's summary says about the run.

    ``cells``: a frame with a row per (dataset, architecture) and its ``images`` (with a run record, also those
    ``scored`` so far and whether it ``finished``); ``metrics``: metric → ``higher``/``lower``; ``notes``: what the
    reader must know first (an incomplete run, unread images).
    """

    run: str
    cells: pl.DataFrame
    methods: list[str]
    metrics: dict[str, str]
    notes: list[str] = field(default_factory=list)


@dataclass
class _Section:
    anchor: str
    title: str
    body: list[str] = field(default_factory=list)
    entries: list[tuple[str, str]] = field(default_factory=list)  # (anchor, label) listed under it in the contents


def _anchor(name: str) -> str:
    return "t-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)


def _link(path: Path, report_dir: Path) -> str:
    """``path`` relative to ``report_dir``, URL-quoted and escaped for an attribute."""
    relative = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(report_dir))).as_posix()
    return html.escape(quote(relative), quote=True)


def _file_links(paths: Sequence[Path], report_dir: Path) -> str:
    return " · ".join(f'<a href="{_link(p, report_dir)}">{html.escape(p.name)}</a>' for p in paths)


def _files(paths: Sequence[Path], report_dir: Path) -> str:
    return f'<p class="files">Files: {_file_links(paths, report_dir)}</p>' if paths else ""


def _picture(path: Path, report_dir: Path, caption: str) -> str:
    link, text = _link(path, report_dir), html.escape(caption)
    return (f'<figure class="picture"><a href="{link}"><img src="{link}" alt="{text}" loading="lazy"></a>'
            f"<figcaption>{text}</figcaption></figure>")


def _pictures(paths: Sequence[Path], report_dir: Path, captions: Sequence[str], wide: bool = False) -> str:
    figures = "\n".join(_picture(p, report_dir, c) for p, c in zip(paths, captions))
    return f'<div class="pictures{" wide" if wide else ""}">\n{figures}\n</div>'


def _table(name: str, table: RankTable | PlainTable, written: Mapping[str, Sequence[Path]], report_dir: Path,
           section: _Section, label: str) -> None:
    section.body.append(f'<section id="{_anchor(name)}">\n{table.to_html()}'
                        f"{_files(written.get(name, []), report_dir)}\n</section>")
    section.entries.append((_anchor(name), label))


def _summary(summary: Summary, tables: Mapping[str, RankTable | PlainTable]) -> _Section:
    section = _Section("summary", "Summary")
    cells = summary.cells
    images = int(cells["images"].sum())
    finished = f" ({int(cells['finished'].sum())} finished)" if "finished" in cells.columns else ""
    metrics = ", ".join(f"{m} {ARROWS[d][0]}" for m, d in summary.metrics.items())
    facts = [("run", summary.run), ("cells", f"{cells.height}{finished}"), ("images", f"{images} over all cells"),
             ("methods", f"{len(summary.methods)}: {', '.join(summary.methods)}"),
             ("metrics", f"{len(summary.metrics)}: {metrics}"), ("tables", str(len(tables)))]
    section.body += [f'<p class="warning">{html.escape(note)}</p>' for note in summary.notes]
    section.body.append('<dl class="facts">' + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
                                                       for k, v in facts) + "</dl>")
    section.body.append(PlainTable("Cells of the run", cells).to_html())
    return section


def _rank_sections(tables: Mapping[str, RankTable | PlainTable], written: Mapping[str, Sequence[Path]],
                   report_dir: Path) -> list[_Section]:
    overall = _Section("ranks", "Rank tables")
    for name in _MAIN:
        if name in tables:
            _table(name, tables[name], written, report_dir, overall, _LABELS[name])
    sections = [overall]
    for prefix, title in _GROUPS:
        names = sorted(name for name in tables if name.startswith(prefix))
        if names:
            group = _Section(_anchor(prefix.rstrip("_")), title)
            for name in names:
                _table(name, tables[name], written, report_dir, group, name.removeprefix(prefix))
            sections.append(group)
    return sections


def _contents(sections: Sequence[_Section], title: str) -> str:
    items = []
    for section in sections:
        entries = "".join(f'<li><a href="#{a}">{html.escape(label)}</a></li>' for a, label in section.entries)
        items.append(f'<li><a href="#{section.anchor}">{html.escape(section.title)}</a>'
                     + (f"<ol>{entries}</ol>" if entries else "") + "</li>")
    return (f'<nav class="toc" aria-label="Contents"><p class="title">{html.escape(title)}</p>'
            f"<ol>{''.join(items)}</ol></nav>")


def write_html(report_dir: str | os.PathLike, written: Mapping[str, Sequence[Path]], *, title: str,
               tables: Mapping[str, RankTable | PlainTable], summary: Summary,
               run_dir: str | os.PathLike | None = None) -> Path:
    """Write ``index.html`` into ``report_dir`` (atomically) and return its path.

    ``tables`` are the report's tables by name (as :func:`storage.report.write_report` names them), ``written``
    their files and the report's other outputs (``cd_diagrams``: the critical-difference PNGs); each table is
    rendered with :meth:`~storage.render.RankTable.to_html` followed by links to its files. The overlays are the
    PNGs found in ``report_dir/overlays`` now; with ``run_dir`` (a local run directory), the PNGs found under its
    :data:`ANALYSES` folders are shown too. A table name of no known section goes to "More tables".
    """
    report_dir = Path(report_dir)
    sections = [_summary(summary, tables), *_rank_sections(tables, written, report_dir)]
    shown = set(_MAIN) | {name for name in tables if name.startswith(tuple(p for p, _ in _GROUPS))}
    for anchor, heading, names in _SECTIONS:
        section = _Section(anchor, heading)
        for name in names:
            if name in tables:
                _table(name, tables[name], written, report_dir, section, _LABELS[name])
                shown.add(name)
        if anchor == "uncertainty" and written.get("cd_diagrams"):
            section.body.append('<h3 id="t-cd-diagrams">Critical-difference diagrams</h3>')
            diagrams = list(written["cd_diagrams"])
            section.body.append(_pictures(diagrams, report_dir, [p.stem.removeprefix("cd_") for p in diagrams],
                                          wide=True))
            section.entries.append(("t-cd-diagrams", "CD diagrams"))
        if section.body:
            sections.append(section)
    more = _Section("more", "More tables")
    for name in sorted(set(tables) - shown):
        _table(name, tables[name], written, report_dir, more, name)
    if more.body:
        sections.append(more)
    overlays = sorted((report_dir / "overlays").glob("*.png"))
    if overlays:
        pictures = _Section("overlays", "Maps over images")
        pictures.body += ["<p>Per cell: its first images (rows) with every method's map (columns), as scored.</p>",
                          _pictures(overlays, report_dir, [p.stem for p in overlays], wide=True)]
        sections.append(pictures)
    analysis = _Section("analysis", "Analysis figures")
    for folder in ANALYSES if run_dir is not None else ():
        figures = sorted((Path(run_dir) / folder).rglob("*.png"))
        if figures:
            analysis.body += [f'<h3 id="t-{folder}">{folder}</h3>',
                              _pictures(figures, report_dir, [p.relative_to(Path(run_dir) / folder).as_posix()
                                                              for p in figures])]
            analysis.entries.append((f"t-{folder}", folder))
    if analysis.body:
        sections.append(analysis)
    files = _Section("files", "Files")
    files.body.append('<ul class="files">' + "".join(f"<li>{html.escape(name)}: {_file_links(paths, report_dir)}</li>"
                                                     for name, paths in written.items() if paths) + "</ul>")
    sections.append(files)
    body = "\n".join(f'<section id="{s.anchor}">\n<h2>{html.escape(s.title)}</h2>\n' + "\n".join(s.body)
                     + "\n</section>" for s in sections)
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f'<div class="layout">\n{_contents(sections, title)}\n<main>\n<h1>{html.escape(title)}</h1>\n'
            f"{body}\n</main>\n</div>\n</body>\n</html>\n")
    path = report_dir / "index.html"
    atomic_write_bytes(*resolve(path), page.encode())
    return path
