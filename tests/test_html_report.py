"""The report's HTML page: it parses, its links resolve, marks and escaping as in the tables, and a browser draws it."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from click.testing import CliRunner
from PIL import Image

from jobs.cli import main
from storage.paper import read_paper_values
from storage.record import CellMarker, CellRecord, run_record
from storage.render import PlainTable, RankTable
from storage.report import write_report
from storage.results import SCORES_SCHEMA, RunStore, saliency_table

EVIL = "<b>evil</b>&cam"  # a method whose name is markup
METHODS = {"gradcam": 0.40, "expected_gradcam": 0.60, "hirescam": 0.45, EVIL: 0.30}
CELLS = [(d, a) for d in ("cub200", "pets") for a in ("resnet50", "vgg16")]
DEFICIENT = {"perturbations": 64, "channels": 512, "references": 50, "pool": None, "rank": 51,
             "condition_number": None, "covariance_condition_number": None, "marchenko_pastur": None,
             "above_ridge": 51, "full_rank": False}
VOID = {"meta", "img", "br", "hr", "link", "input"}


def make_run(path: Path) -> RunStore:
    store = RunStore(path)
    rng = np.random.default_rng(5)
    record = run_record("synthetic", {}, seed=0, metric_directions={"insertion": "higher", "deletion": "lower"},
                        cells=[CellRecord(dataset=d, architecture=a, images=20) for d, a in CELLS])
    store.write_record(record.with_diagnostics("pets", "vgg16", {"expected_gradcam": DEFICIENT}))
    for dataset, architecture in CELLS:
        rows = [{"run": "synthetic", "method": m, "image_id": str(i), "target": 0, "metric": metric,
                 "value": float(mu + shift + rng.normal(0, 0.05)), "seconds": 0.0}
                for i in range(20) for m, mu in METHODS.items()
                for metric, shift in (("insertion", 0.2), ("deletion", -0.2))]
        saliency = saliency_table("synthetic", "gradcam", ["0"], [0], np.ones((1, 2, 2)), [0.0])
        store.write_shard(dataset, architecture, 0, saliency, pa.Table.from_pylist(rows, schema=SCORES_SCHEMA))
        store.mark_cell_done(dataset, architecture, CellMarker(images=20, shards=[0]))
    return store


def picture(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(path)


class Page(HTMLParser):
    """Every start tag with its attributes, ids, and the nesting checked as it goes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()

    def attributes(self, name: str) -> list[str]:
        return [attrs[name] for _, attrs in self.tags if attrs.get(name) is not None]


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    assert page.open == [], page.open
    return page


def rows(text: str, anchor: str) -> list[list[str]]:
    """The body rows of the table in the section ``anchor``, each cell's inner HTML."""
    section = re.search(rf'<section id="{anchor}">(.*?)</section>', text, re.S).group(1)
    body = section.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, dict[str, list[Path]]]:
    run = tmp_path_factory.mktemp("html") / "run"
    make_run(run)
    paper = run.parent / "paper.csv"
    paper.write_text("table,dataset,architecture,method,metric,value,scale\n"
                     "12a,*,*,gradcam,insertion,60.0,100\n12a,*,*,expected_gradcam,insertion,80.0,100\n"
                     "12a,*,*,hirescam,insertion,65.0,100\n")
    picture(run / "report" / "overlays" / "pets_vgg16.png")
    picture(run / "convergence" / "steps.png")
    picture(run / "clip" / "vit b" / "scores.png")
    written = write_report(run, paper=(read_paper_values(paper), str(paper)))
    return run / "report", written


def test_the_page_parses_and_every_link_resolves(report):
    out, written = report
    assert written["html"] == [out / "index.html"]
    text = (out / "index.html").read_text()
    page = parse(text)
    ids = page.attributes("id")
    assert len(ids) == len(set(ids))
    links = page.attributes("href") + page.attributes("src")
    assert not any(urlsplit(link).scheme or link.startswith("//") for link in links)  # nothing from the network
    for link in links:
        if link.startswith("#"):
            assert link[1:] in ids, link
        else:
            assert (out / unquote(link)).is_file(), link
    targets = {(out / unquote(link)).resolve() for link in links if not link.startswith("#")}
    for name, paths in written.items():
        if name != "html":
            assert {p.resolve() for p in paths} <= targets, name
    images = {unquote(src) for src in page.attributes("src")}
    assert {"overlays/pets_vgg16.png", "../convergence/steps.png", "../clip/vit b/scores.png",
            "figures/cd_deletion.png", "figures/cd_insertion.png"} <= images
    assert "<script" not in text and "<link" not in text
    for section in ("summary", "ranks", "t-ranks_architecture", "t-ranks_dataset", "paper", "diagnostics",
                    "uncertainty", "overlays", "analysis", "files"):
        assert section in ids and f'href="#{section}"' in text, section  # each in the contents too


def test_the_rank_tables_mark_the_best_bold_and_the_second_underlined(report):
    out, _ = report
    text = (out / "index.html").read_text()
    means = {cells[0]: cells[1:] for cells in rows(text, "t-table12a_means")}  # columns: deletion, insertion
    assert [m for m, cells in means.items() if cells[1].startswith("<strong>")] == ["expected_gradcam†"]
    assert [m for m, cells in means.items() if cells[1].startswith("<u>")] == ["hirescam"]
    assert means["gradcam"][1] == f"{float(means['gradcam'][1]):.3f}"  # neither: the value alone
    ranks = {cells[0]: cells[1:] for cells in rows(text, "t-table12b_ranks")}
    assert ranks["expected_gradcam†"][1] == "<strong>1.000</strong>"
    assert '<td class="num"><strong>' in text and 'scope="col" title="higher is better">insertion ↑</th>' in text
    assert "rank(M̂) &lt; K in 1 of 4 cells" in text


def test_rank_and_plain_tables_render_as_html():
    frame = pl.DataFrame({"method": ["a", "b", "c"], "ins": [0.9, 0.5, 0.1]})
    table = RankTable("T & <x>", frame, {"ins": "higher"}, notes=["n < 1"])
    assert table.to_html().count("<strong>0.900</strong>") == 1 and "<u>0.500</u>" in table.to_html()
    assert "<figcaption>T &amp; &lt;x&gt;</figcaption>" in table.to_html() and "<li>n &lt; 1</li>" in table.to_html()
    plain = PlainTable("P", pl.DataFrame({"name": ["<i>"], "k": [3], "ok": [True], "x": [None]},
                                         schema={"name": pl.String, "k": pl.Int64, "ok": pl.Boolean,
                                                 "x": pl.Float64}))
    assert ('<tr><td>&lt;i&gt;</td><td class="num">3</td><td>yes</td><td class="num">–</td></tr>'
            in plain.to_html())
    parse(table.to_html() + plain.to_html())


def test_text_is_escaped_everywhere(report):
    out, _ = report
    text = (out / "index.html").read_text()
    page = parse(text)
    assert "b" not in {tag for tag, _ in page.tags}  # the method's name injected no element
    assert "&lt;b&gt;evil&lt;/b&gt;&amp;cam" in text and EVIL not in text
    assert "&lt;b&gt;evil&lt;/b&gt;&amp;cam" in rows(text, "t-table12b_ranks")[0][0]  # sorted first


def test_the_paper_section_is_there_with_paper_values_only(report, tmp_path):
    out, _ = report
    text = (out / "index.html").read_text()
    assert '<section id="t-paper_comparison">' in text and '<section id="t-paper_agreement">' in text
    comparison = {cells[3]: cells for cells in rows(text, "t-paper_comparison")}
    assert comparison["gradcam"][:3] == ["12a", "*", "*"] and comparison["gradcam"][5] == "60"
    make_run(tmp_path / "run")
    bare = write_report(tmp_path / "run")["html"][0].read_text()
    assert 'id="paper"' not in bare and "paper_comparison" not in bare
    assert 'id="overlays"' not in bare and 'id="analysis"' not in bare


def test_the_summary_says_what_the_run_holds_and_that_it_is_incomplete(report, tmp_path):
    out, _ = report
    summary = re.search(r'<section id="summary">(.*?)</section>', (out / "index.html").read_text(), re.S).group(1)
    assert "<dt>cells</dt><dd>4 (4 finished)</dd>" in summary and "<dd>80 over all cells</dd>" in summary
    assert "<dd>2: insertion ↑, deletion ↓</dd>" in summary and "<dd>4: &lt;b&gt;" in summary
    store = make_run(tmp_path / "run")
    (tmp_path / "run" / "cells" / "dataset=pets" / "architecture=vgg16.json").unlink()
    assert store.cell_done("pets", "vgg16") is None
    text = write_report(tmp_path / "run")["html"][0].read_text()
    assert '<p class="warning">Incomplete run: 1 of 4 cells have not finished (pets/vgg16)' in text
    assert ["pets", "vgg16", "20", "20", "no"] in rows(text, "summary")


def test_the_report_command_prints_the_page(tmp_path):
    make_run(tmp_path / "run")
    result = CliRunner().invoke(main, ["report", str(tmp_path / "run"), "--no-overlays"])
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith(f"report page: {tmp_path / 'run' / 'report' / 'index.html'}")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium on PATH")
def test_a_headless_browser_draws_the_page(report, tmp_path):
    out, _ = report
    shot = tmp_path / "page.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
                    (out / "index.html").resolve().as_uri()], check=True, capture_output=True, timeout=180)
    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50  # text and tables, not a blank canvas
