"""Tables and their renderings (Markdown, CSV, LaTeX).

:class:`RankTable`: methods × metrics, best value bold and second underlined, an optional marker
after a method's name (explained in the notes). :class:`PlainTable`: plain values, nothing highlighted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from storage.files import atomic_write_bytes, resolve

__all__ = ["RankTable", "PlainTable"]

ARROWS = {"higher": ("↑", r"$\uparrow$"), "lower": ("↓", r"$\downarrow$")}
_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                   "†": r"$^\dagger$", "κ": r"$\kappa$", "λ": r"$\lambda$"}


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
class RankTable(_Written):
    """Rows = methods, columns = metrics; ``directions`` says which way is better for each column.

    ``marks`` (method → symbol, e.g. ``"†"``) is appended to the method's name in every rendering
    (the frame keeps the plain name); a note should say what it means.
    """

    title: str
    frame: pl.DataFrame
    directions: dict[str, Literal["higher", "lower"]]
    notes: list[str] = field(default_factory=list)
    digits: int = 3
    marks: dict[str, str] = field(default_factory=dict)

    def label(self, method: str) -> str:
        """The method's name as rendered: with its mark, if any."""
        return method + self.marks.get(method, "")

    @property
    def columns(self) -> list[str]:
        return self.frame.columns[1:]

    def standing(self, column: str) -> list[int | None]:
        """Per row: 1 for the best value (ties included), 2 for the second-best distinct value, else None."""
        values = self.frame[column].to_list()
        defined = sorted({v for v in values if v is not None and not math.isnan(v)},
                         reverse=self.directions[column] == "higher")
        places = {value: place for place, value in enumerate(defined[:2], 1)}
        return [places.get(v) if v is not None else None for v in values]

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
        if self.notes:
            lines += ["", *(f"- {note}" for note in self.notes)]
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        header = ["Method", *(f"{_latex_escape(c)} {ARROWS[self.directions[c]][1]}" for c in self.columns)]
        body = [[_latex_escape(cells[0]), *cells[1:]] for cells in self._cells(r"\textbf{{{}}}", r"\underline{{{}}}")]
        lines = [r"\begin{table}[t]", r"\centering", f"\\caption{{{_latex_escape(self.title)}}}",
                 r"\begin{tabular}{l" + "r" * len(self.columns) + "}", r"\toprule",
                 " & ".join(header) + r" \\", r"\midrule"]
        lines += [" & ".join(cells) + r" \\" for cells in body]
        lines += [r"\bottomrule", r"\end{tabular}"]
        lines += [f"% {note}" for note in self.notes]
        lines += [r"\end{table}"]
        return "\n".join(lines) + "\n"

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

    def to_csv(self) -> str:
        flags = [pl.when(pl.col(c)).then(pl.lit("yes")).when(~pl.col(c)).then(pl.lit("no")).alias(c)
                 for c, dtype in self.frame.schema.items() if dtype == pl.Boolean]
        return self.frame.with_columns(flags).write_csv()
