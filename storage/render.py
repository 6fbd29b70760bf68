"""Tables and their renderings (Markdown, CSV, LaTeX, HTML).

:class:`RankTable`: methods × metrics, best value bold and second underlined, an optional marker
after a method's name (explained in the notes). With :class:`Intervals`, a value whose interval overlaps the best's
shares the bold (a tie, not a win; :func:`storage.statistics.places`), and likewise for the second.
:class:`PlainTable`: plain values, nothing highlighted.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from storage.files import atomic_write_bytes, resolve
from storage.statistics import Interval, places

__all__ = ["Intervals", "PlainTable", "RankTable"]

ARROWS = {"higher": ("↑", r"$\uparrow$"), "lower": ("↓", r"$\downarrow$")}
_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                   "†": r"$^\dagger$", "κ": r"$\kappa$", "λ": r"$\lambda$"}


def _html_figure(title: str, head: str, body: list[str], notes: list[str]) -> str:
    """A table as an HTML ``<figure>``: its title as the caption, the table in a horizontally scrolling box, the
    notes as a list below; ``head`` (the header cells) and ``body`` (the rows) are already rendered HTML."""
    parts = [f'<figure class="table"><figcaption>{html.escape(title)}</figcaption>',
             f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>', *body, "</tbody></table></div>"]
    if notes:
        parts += ['<ul class="notes">', *(f"<li>{html.escape(note)}</li>" for note in notes), "</ul>"]
    parts.append("</figure>")
    return "\n".join(parts) + "\n"


def _latex_escape(text: str) -> str:
    out: list[str] = []
    for char in text:
        if char == "\u0302" and out:  # combining circumflex (M̂): the text-mode accent on what precedes it
            out[-1] = f"\\^{{{out[-1]}}}"
        else:
            out.append(_LATEX_SPECIALS.get(char, char))
    return "".join(out)


class _Written:
    """``write``: a table's Markdown, CSV and LaTeX renderings as files."""

    def write(self, directory: str | Path, name: str) -> list[Path]:
        """``name``.md, .csv and .tex in ``directory``, each written atomically."""
        directory = Path(directory)
        paths = []
        for suffix, text in (("md", self.to_markdown()), ("csv", self.to_csv()), ("tex", self.to_latex())):
            path = directory / f"{name}.{suffix}"
            filesystem, target = resolve(path)
            atomic_write_bytes(filesystem, target, text.encode())  # a full disk leaves the old file, never a part
            paths.append(path)
        return paths


@dataclass(frozen=True)
class Intervals:
    """The uncertainty behind a :class:`RankTable`'s marks: per column, per row (the frame's order), an interval
    ``(low, high)`` or ``None`` (the value alone); ``note`` says what they are and is rendered with the notes."""

    bounds: dict[str, list[Interval | None]]
    note: str


@dataclass(frozen=True)
class RankTable(_Written):
    """Rows = methods, columns = metrics; ``directions`` says which way is better for each column.

    ``marks`` (method → symbol, e.g. ``"†"``) is appended to the method's name in every rendering
    (the frame keeps the plain name); a note should say what it means. ``intervals`` decide which values
    share the bold and the underline (:meth:`standing`); a note names the places they make shared.
    """

    title: str
    frame: pl.DataFrame
    directions: dict[str, Literal["higher", "lower"]]
    notes: list[str] = field(default_factory=list)
    digits: int = 3
    marks: dict[str, str] = field(default_factory=dict)
    intervals: Intervals | None = None

    def label(self, method: str) -> str:
        """The method's name as rendered: with its mark, if any."""
        return method + self.marks.get(method, "")

    @property
    def columns(self) -> list[str]:
        return self.frame.columns[1:]

    def standing(self, column: str) -> list[int | None]:
        """Per row: 1 for the best value and every value whose interval overlaps its interval, 2 for the best of the
        rest and every value of the rest whose interval overlaps that one's, else None (:func:`places`).

        Without intervals for the column each value stands alone: 1 for the best (ties included), 2 for the
        second-best.
        """
        bounds = self.intervals.bounds.get(column) if self.intervals is not None else None
        return places(self.frame[column].to_list(), bounds, higher=self.directions[column] == "higher")

    def rendered_notes(self) -> list[str]:
        """The notes, then what the intervals are and where they make a place shared by different values."""
        if self.intervals is None:
            return list(self.notes)
        methods = self.frame[self.frame.columns[0]].to_list()
        shared = []
        for column in self.columns:
            if column not in self.intervals.bounds:
                continue
            standing, values = self.standing(column), self.frame[column].to_list()
            for place, word in ((1, "best"), (2, "second")):
                rows = [i for i, p in enumerate(standing) if p == place]
                if len({values[i] for i in rows}) > 1:
                    shared.append(f"{column} {word}: {', '.join(str(methods[i]) for i in rows)}")
        ties = [f"Tied within their intervals (marked alike, no win): {'; '.join(shared)}"] if shared else []
        return [*self.notes, self.intervals.note, *ties]

    def _cells(self, bold: str, underline: str) -> list[list[str]]:
        places = {column: self.standing(column) for column in self.columns}
        rows = []
        for index, row in enumerate(self.frame.iter_rows()):
            cells = [self.label(str(row[0]))]
            for column, value in zip(self.columns, row[1:]):
                text = "–" if value is None or math.isnan(value) else f"{value:.{self.digits}f}"
                place = places[column][index]
                cells.append(bold.format(text) if place == 1 else underline.format(text) if place == 2 else text)
            rows.append(cells)
        return rows

    def to_markdown(self) -> str:
        header = ["method", *(f"{c} {ARROWS[self.directions[c]][0]}" for c in self.columns)]
        lines = [f"**{self.title}**", "", "| " + " | ".join(header) + " |",
                 "|" + "|".join([":---"] + ["---:"] * len(self.columns)) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in self._cells("**{}**", "<u>{}</u>")]
        notes = self.rendered_notes()
        if notes:
            lines += ["", *(f"- {note}" for note in notes)]
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        header = ["Method", *(f"{_latex_escape(c)} {ARROWS[self.directions[c]][1]}" for c in self.columns)]
        body = [[_latex_escape(cells[0]), *cells[1:]] for cells in self._cells(r"\textbf{{{}}}", r"\underline{{{}}}")]
        lines = [r"\begin{table}[t]", r"\centering", f"\\caption{{{_latex_escape(self.title)}}}",
                 r"\begin{tabular}{l" + "r" * len(self.columns) + "}", r"\toprule",
                 " & ".join(header) + r" \\", r"\midrule"]
        lines += [" & ".join(cells) + r" \\" for cells in body]
        lines += [r"\bottomrule", r"\end{tabular}"]
        lines += [f"% {note}" for note in self.rendered_notes()]
        lines += [r"\end{table}"]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """A ``<figure>``: the title, the table (values right-aligned, best ``<strong>``, second ``<u>``, the arrow
        of each metric's direction in its header) and the notes; every text escaped."""
        head = '<th scope="col">method</th>' + "".join(
            f'<th class="num" scope="col" title="{self.directions[c]} is better">'
            f"{html.escape(c)} {ARROWS[self.directions[c]][0]}</th>" for c in self.columns)
        body = [f'<tr><th scope="row">{html.escape(cells[0])}</th>'
                + "".join(f'<td class="num">{cell}</td>' for cell in cells[1:]) + "</tr>"
                for cells in self._cells("<strong>{}</strong>", "<u>{}</u>")]
        return _html_figure(self.title, head, body, self.rendered_notes())

    def to_csv(self) -> str:
        frame = self.frame
        if self.marks:
            first = frame.columns[0]
            frame = frame.with_columns(pl.Series(first, [self.label(str(v)) for v in frame[first]], pl.String))
        return frame.write_csv()


@dataclass(frozen=True)
class PlainTable(_Written):
    """A table of plain values: text, integers, floats (``digits`` significant), booleans as yes/no.

    Nothing is highlighted; a missing value renders as "–" (empty in CSV). Text columns are left-,
    numeric columns right-aligned.
    """

    title: str
    frame: pl.DataFrame
    notes: list[str] = field(default_factory=list)
    digits: int = 4

    def _text(self, value: object) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return f"{value:.{self.digits}g}"
        return str(value)

    def _numeric(self) -> list[bool]:
        return [dtype.is_numeric() for dtype in self.frame.dtypes]

    def _rows(self) -> list[list[str]]:
        return [[self._text(value) for value in row] for row in self.frame.iter_rows()]

    def to_markdown(self) -> str:
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.frame.columns) + " |",
                 "|" + "|".join("---:" if numeric else ":---" for numeric in self._numeric()) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in self._rows()]
        if self.notes:
            lines += ["", *(f"- {note}" for note in self.notes)]
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        align = "".join("r" if numeric else "l" for numeric in self._numeric())
        lines = [r"\begin{table}[t]", r"\centering", f"\\caption{{{_latex_escape(self.title)}}}",
                 f"\\begin{{tabular}}{{{align}}}", r"\toprule",
                 " & ".join(_latex_escape(c) for c in self.frame.columns) + r" \\", r"\midrule"]
        lines += [" & ".join(_latex_escape(cell) for cell in cells) + r" \\" for cells in self._rows()]
        lines += [r"\bottomrule", r"\end{tabular}"]
        lines += [f"% {note}" for note in self.notes]
        lines += [r"\end{table}"]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """A ``<figure>``: the title, the table (numeric columns right-aligned) and the notes; every text escaped."""
        align = [' class="num"' if numeric else "" for numeric in self._numeric()]
        head = "".join(f'<th{a} scope="col">{html.escape(c)}</th>' for a, c in zip(align, self.frame.columns))
        body = ["<tr>" + "".join(f"<td{a}>{html.escape(cell)}</td>" for a, cell in zip(align, cells)) + "</tr>"
                for cells in self._rows()]
        return _html_figure(self.title, head, body, self.notes)

    def to_csv(self) -> str:
        flags = [pl.when(pl.col(c)).then(pl.lit("yes")).when(~pl.col(c)).then(pl.lit("no")).alias(c)
                 for c, dtype in self.frame.schema.items() if dtype == pl.Boolean]
        return self.frame.with_columns(flags).write_csv()
