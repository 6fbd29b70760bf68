"""A rank table and its renderings: Markdown, CSV and LaTeX, best value bold and second underlined."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

__all__ = ["RankTable"]

ARROWS = {"higher": ("↑", r"$\uparrow$"), "lower": ("↓", r"$\downarrow$")}
_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(char, char) for char in text)


@dataclass(frozen=True)
class RankTable:
    """Rows = methods, columns = metrics; ``directions`` says which way is better for each column."""

    title: str
    frame: pl.DataFrame
    directions: dict[str, Literal["higher", "lower"]]
    notes: list[str] = field(default_factory=list)
    digits: int = 3

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
        marks = {column: self.standing(column) for column in self.columns}
        rows = []
        for index, row in enumerate(self.frame.iter_rows()):
            cells = [str(row[0])]
            for column, value in zip(self.columns, row[1:]):
                text = "–" if value is None or math.isnan(value) else f"{value:.{self.digits}f}"
                place = marks[column][index]
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
        return self.frame.write_csv()

    def write(self, directory: str | Path, name: str) -> list[Path]:
        """``name``.md, .csv and .tex in ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for suffix, text in (("md", self.to_markdown()), ("csv", self.to_csv()), ("tex", self.to_latex())):
            path = directory / f"{name}.{suffix}"
            path.write_text(text)
            paths.append(path)
        return paths
