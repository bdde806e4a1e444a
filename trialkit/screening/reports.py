"""Screening outputs: JSON document, candidate CSV, plain-text table, screening log CSV, self-contained HTML.

Every output carries the rule set stamp (id, version, sha256 of the rule file) and the as-of date. Writers take
an optional `generated_at` so golden-file tests stay stable; the library never reads the clock itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from json.encoder import encode_basestring as _json_string  # json's C escaper (ensure_ascii=False)
from typing import Any, BinaryIO

import polars as pl

from trialkit import __version__
from trialkit.errors import UsageError
from trialkit.screening.engine import DISPOSITION_COL, PRIMARY_COL, Screening, result_col, select_candidates
from trialkit.screening.explain import UNUSABLE, Funnel, Summary, candidates, funnel, summarise
from trialkit.screening.outcomes import CandidateResult, CriterionOutcome
from trialkit.screening.table import SEP, result_labels, result_table
from trialkit.screening.words import Vocabulary, criterion_words, describe_needed, form_items, vocabulary
from trialkit.spreadsheet import safe_frame

FORMATS = ("table", "csv", "json", "html")


@dataclass(frozen=True)
class Report:
    """Everything a report shows, computed once. `table` holds every candidate (text cells, built column-wise),
    or the first `table_head` of them when the report was built for a view that shows no more (the terminal
    table, the HTML page); `candidates` the per-criterion checklists of the candidates shown (the first ones, up
    to a limit)."""

    screening: Screening
    summary: Summary
    candidates: tuple[CandidateResult, ...]
    funnel: Funnel
    table: pl.DataFrame | None = None
    #: the forms' words (field, choice and instrument labels); names only when built without the study
    vocab: Vocabulary = field(default_factory=Vocabulary)
    #: what the report was made from: a data file, or "REDCap <url> project <id>, pulled <time>"
    source: str | None = None
    #: `table` holds the first this many candidates only (None: every candidate)
    table_head: int | None = None
    #: `table` has the criterion label columns (a report for the CLI's writers of every candidate goes without:
    #: they add them a slice at a time)
    labels: bool = True

    @property
    def stamp(self) -> dict[str, Any]:
        return self.screening.stamp()

    @cached_property
    def rows(self) -> pl.DataFrame:
        """The result table of every candidate (built here if `table` holds only the first ones, or no labels)."""
        if self.table is not None and self.table_head is None and self.labels:
            return self.table
        return result_table(self.screening, self.vocab)

    def head(self, n: int | None) -> pl.DataFrame:
        """The result table's first `n` rows (None: all), from a table of the first candidates when it holds them."""
        if self.table is not None and (self.table_head is None or (n is not None and n <= self.table_head)):
            return _labelled(self, self.table if n is None else self.table.head(n), 0)
        return self.rows if n is None else self.rows.head(n)

    @property
    def provenance(self) -> dict[str, Any]:
        """What, when and how: source, trialkit version, rule set stamp, as-of date (the time is the writer's)."""
        return {
            "source": self.source,
            "trialkit_version": __version__,
            "ruleset": self.screening.rules.stamp(),
            "as_of": self.screening.as_of.isoformat(),
        }

    @property
    def total(self) -> int:
        return len(self.screening)


#: Checklists (per-criterion values) built by default; beyond this, reports list candidates without them.
MAX_CHECKLISTS = 2000


def without_checklist_values(screening: Screening) -> Screening:
    """`screening` keeping, of the candidates' own columns, only those a report without checklists reads: the
    record id, the site (data access group) and the screening log's consent fields and reference date. The others
    (most of a gigabyte for a million candidates) are let go before the report is built; the instance tables
    stay (what is still needed names instances)."""
    from dataclasses import replace

    wanted = (screening.record_id, SITE_COLUMN, *_LOG_VALUES, screening.rules.reference_field)
    keep = [c for c in dict.fromkeys(wanted) if c and c in screening.data.columns]
    return replace(screening, data=screening.data.select(keep))


def build_report(
    screening: Screening,
    *,
    checklists: int | None = MAX_CHECKLISTS,
    study: Any = None,
    source: str | None = None,
    rows: int | None = None,
    labels: bool = True,
) -> Report:
    """Counts, funnel and result table for every candidate; checklists for the first `checklists` (None: all).
    A checklist costs Python objects per criterion: a million candidates get a bounded number of them.
    With the `study`, reports use its field, choice and form labels; `source` says what the data came from.
    `rows`: build the result table of the first this many candidates only, for a view that lists no more (the
    terminal table, the HTML page); the counts still cover every candidate, and `Report.rows` builds the whole
    table if a writer asks for it. Without `labels`, the table has no criterion label columns (twenty-odd columns of
    a million texts): write_csv, write_json and the screening log add them a slice at a time or do without."""
    summary = summarise(screening)
    ids = screening.frame.get_column(screening.record_id)
    shown = screening
    if checklists is not None and len(screening) > checklists:
        shown = select_candidates(screening, ids.head(checklists))
    head = rows if rows is not None and len(screening) > rows else None
    vocab = vocabulary(study, screening.rules)
    return Report(
        screening,
        summary,
        tuple(candidates(shown)),
        funnel(screening, summary),
        result_table(screening, vocab, labels=labels) if head is None
        else result_table(select_candidates(screening, ids.head(head)), vocab),
        vocab,
        source,
        head,
        labels or head is not None,
    )


def _every_row(report: Report) -> pl.DataFrame:
    """The result table of every candidate, with the criterion labels or without (see `_labelled`)."""
    if report.table is not None and report.table_head is None:
        return report.table
    return report.rows


def _labelled(report: Report, part: pl.DataFrame, start: int) -> pl.DataFrame:
    """Rows `start`.. of `_every_row(report)` with the criterion label columns, in the table's order: made from the
    screening frame's result codes if the table was built without them."""
    ids = [cc.id for cc in report.screening.rules.criteria]
    if not ids or ids[0] in part.columns:
        return part
    labels = report.screening.frame.slice(start, part.height).select(result_labels(report.screening))
    at = part.columns.index("to_correct") + 1
    return pl.concat([part.select(part.columns[:at]), labels, part.select(part.columns[at:])], how="horizontal")


def value_words(o: CriterionOutcome, vocab: Vocabulary) -> list[tuple[str, str, str]]:
    """A checklist's values as (what, name, value) in the forms' words: ("MINI: major depressive disorder",
    "mini_mdd", "Yes"). Masked identifiers stay masked; computed values keep their rule-file names."""
    bad = _to_correct_fields(o)
    return [
        _unusable_word(k, vocab) if v is None and k in bad else _value_word(k, v, vocab) for k, v in o.values.items()
    ]




def _to_correct_fields(o: CriterionOutcome) -> frozenset[str]:
    """The fields of `o.to_correct` ('vs_sbp_1: outside 60-260: ...', 'atrq_dose (atrq #2, ...): ...')."""
    if not o.to_correct:
        return frozenset()
    return frozenset(t.split(":", 1)[0].split(" (", 1)[0] for t in o.to_correct)


def _unusable_word(k: str, vocab: Vocabulary) -> tuple[str, str, str]:
    return (vocab.field(k), k, UNUSABLE)


def _value_word(k: str, v: Any, vocab: Vocabulary) -> tuple[str, str, str]:
    if k == "today":
        return ("Reference date", k, "blank" if v is None else str(v))
    if k in vocab.fields:
        shown = v if v == "***" else vocab.value(k, v)
        return (vocab.field(k), k, "blank" if v is None else str(shown))
    if k.endswith(" instances counted") and isinstance(v, str) and v != "***":
        form = k.removesuffix(" instances counted")
        return (f"{vocab.form(form)}: which counted", k, _instance_words(v, vocab))
    return (k, k, "blank" if v is None else str(v))


def value_words_once(vocab: Vocabulary) -> Callable[[CriterionOutcome], list[tuple[str, str, str]]]:
    """value_words for many checklists, each (name, value) put in words once: two thousand checklists show the
    same few values over and over. A value is looked up by its type and, for a float, its repr as well (1, 1.0
    and True, or 0.0 and -0.0, are equal keys but not the same words)."""
    memo: dict[tuple[str, type, Any], tuple[str, str, str]] = {}

    def words(o: CriterionOutcome) -> list[tuple[str, str, str]]:
        out = []
        bad = _to_correct_fields(o)
        for k, v in o.values.items():
            if v is None and k in bad:
                out.append(_unusable_word(k, vocab))
                continue
            key = (k, type(v), repr(v) if isinstance(v, float) else v)
            try:
                got = memo.get(key)
            except TypeError:  # a value that is not hashable: not kept
                out.append(_value_word(k, v, vocab))
                continue
            if got is None:
                got = memo[key] = _value_word(k, v, vocab)
            out.append(got)
        return out

    return words


_COUNTED = {"yes": "counted", "no": "not counted", "unknown": "unknown"}
_NAME = re.compile(r"\b[a-z][a-z0-9_]*\b")


def _instance_words(detail: str, vocab: Vocabulary) -> str:
    """'#2 venlafaxine: no (atrq_duration 5.9 < 6)' -> '#2 venlafaxine: not counted (Duration (weeks) 5.9 < 6)'."""
    parts = []
    for part in detail.split("; "):
        head, _, rest = part.rpartition(": ")
        word, _, why = rest.partition(" (")
        text = f"{head}: {_COUNTED.get(word, word)}"
        if why:
            why = _NAME.sub(lambda m: vocab.field(m.group(0)) if m.group(0) in vocab.fields else m.group(0), why)
            text += f" ({why}"
        parts.append(text)
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# JSON


def _head(report: Report) -> dict[str, Any]:
    s = report.screening
    return {
        "ruleset": s.rules.stamp(),
        "source": report.source,
        "trialkit_version": __version__,
        "as_of": s.as_of.isoformat(),
        "reference_date": s.rules.reference_field,
        "notes": list(s.notes),
        "summary": report.summary.to_dict(),
        "criteria": [
            {"id": cc.id, "kind": cc.kind.value, "text": cc.criterion.text, "attested": cc.criterion.is_attested}
            for cc in s.rules.criteria
        ],
        "checklists": len(report.candidates),
        **({"by_site": [
            {**{k: v for k, v in site.items() if k != "top_reason"},
             "top_reason": list(site["top_reason"]) if site["top_reason"] else None}
            for site in site_counts(report)
        ]} if SITE_COLUMN in s.data.columns else {}),
    }


def _listed(cell: str) -> list[str]:
    return [x for x in cell.split(SEP) if x] if cell else []


def _candidate_dicts(report: Report, rows: pl.DataFrame) -> Iterator[dict[str, Any]]:
    ids = [cc.id for cc in report.screening.rules.criteria]
    rid = report.screening.record_id
    checklists = {c.record_id: c for c in report.candidates}
    words = value_words_once(report.vocab)
    for row in rows.iter_rows(named=True):
        item: dict[str, Any] = {
            "record_id": row[rid],
            "disposition": row["disposition"],
            "primary_reason": row["primary_reason"] or None,
            "reasons": _listed(row["reasons"]),
            "still_needed": _listed(row["still_needed"]),
            "to_correct": _listed(row["to_correct"]),
            "results": {cid: row[cid] for cid in ids},
            "primary_reason_text": row["primary_reason_text"] or None,
            "still_needed_text": _listed(row["still_needed_text"]),
        }
        c = checklists.get(item["record_id"])
        if c is not None:
            item["criteria"] = [
                {**o.to_dict(), "text": o.text, "values_text": {n: f"{w}: {v}" for w, n, v in words(o)}}
                for o in c.criteria
            ]
        yield item


def to_document(report: Report) -> dict[str, Any]:
    """The report as one JSON-able dict (fine for thousands of candidates; render_json writes more faster)."""
    doc = _head(report)
    doc["candidates"] = list(_candidate_dicts(report, report.rows))
    return doc


def render_json(report: Report) -> str:
    """Indented JSON. Each candidate has its results; the ones with a checklist also their criteria with values.
    Candidates past those are written by polars, one compact object a line (a million in seconds)."""
    return "".join(json_pieces(report))


#: Candidates written per piece of json_pieces (bounded memory for a file of a million candidates)
_JSON_SLICE = 50_000


def json_pieces(report: Report) -> Iterator[str]:
    """render_json's text in pieces whose concatenation is that text (the first one opens the object and holds
    every key before the candidates): a writer can put a million candidates in a file piece by piece."""
    rows = report.rows
    n = len(report.candidates)
    head = json.dumps(_head(report), indent=2, ensure_ascii=False)
    checklists = [
        # split at the line ends json.dumps writes only: splitlines() also splits at U+2028 inside a value
        "\n".join("    " + line for line in json.dumps(item, indent=2, ensure_ascii=False).split("\n"))
        for item in _candidate_dicts(report, rows.head(n))
    ]
    if not checklists and rows.height <= n:
        yield head[:-2] + ',\n  "candidates": []\n}\n'
        return
    yield head[:-2] + ',\n  "candidates": [\n'
    first = True
    if checklists:
        yield ",\n".join(checklists)
        first = False
    for start in range(n, rows.height, _JSON_SLICE):
        yield ("" if first else ",\n") + _compact_candidates(report, rows.slice(start, _JSON_SLICE))
        first = False
    yield "\n  ]\n}\n"


def _compact_frame(report: Report, rows: pl.DataFrame, *, results: bool = True) -> pl.DataFrame:
    """The candidates past the checklists as polars writes them to JSON: one struct of these columns each (without
    "results" for a writer that puts that object in itself)."""
    rid = report.screening.record_id
    ids = [cc.id for cc in report.screening.rules.criteria]
    lists = [
        pl.col(c).str.split(SEP).list.eval(pl.element().filter(pl.element() != "")).alias(c)
        for c in ("reasons", "still_needed", "to_correct", "still_needed_text")
    ]
    return rows.select(
        pl.col(rid).alias("record_id"),
        "disposition",
        pl.when(pl.col("primary_reason") != "").then(pl.col("primary_reason")).alias("primary_reason"),
        *lists[:3],
        *([(pl.struct(ids) if ids else pl.lit(None)).alias("results")] if results else []),
        pl.when(pl.col("primary_reason_text") != "").then(pl.col("primary_reason_text")).alias(
            "primary_reason_text"
        ),
        lists[3],
    )


def _compact_candidates(report: Report, rows: pl.DataFrame) -> str:
    # one compact object a line: indented and separated in one replace (str.splitlines would also split inside a
    # value holding U+2028 or U+0085, which JSON leaves unescaped, and a Python loop over a million lines is slow)
    text = _compact_frame(report, rows).write_ndjson()
    return "    " + text.rstrip("\n").replace("\n", ",\n    ") if text else ""


def write_json(report: Report, out: BinaryIO, *, opening: Callable[[str], str] | None = None) -> None:
    """render_json's bytes written to `out`, the first piece of json_pieces passed through `opening` if given (the
    CLI puts its envelope there). The plain path spends most of its time in json.dumps' indented layout (pure
    Python) and in Python strings of a million compact lines; here the checklists are laid out by
    `indented_json` and the other candidates go from polars' JSON encoder straight to the file."""
    rows = _every_row(report)
    n = len(report.candidates)
    first = json.dumps(_head(report), indent=2, ensure_ascii=False)[:-2]
    first += ',\n  "candidates": [\n' if rows.height else ',\n  "candidates": []\n}\n'
    out.write((opening(first) if opening else first).encode("utf-8"))
    if not rows.height:
        return
    if n:
        out.write(",\n".join(
            "    " + indented_json(item, "    ")
            for item in _candidate_dicts(report, _labelled(report, rows.head(n), 0))
        ).encode("utf-8"))
    if rows.height > n:
        if n:
            out.write(b",\n")
        line = _compact_line(report, rows)
        for start in range(n, rows.height, _JSON_SLICE):
            lines = line(start, _JSON_SLICE)
            # each line ends in ",\n" but the last one (in "\n"); quote_style "never" writes the JSON text as is
            last = start + _JSON_SLICE >= rows.height
            lines.head(lines.height - last).write_csv(
                out, include_header=False, quote_style="never", line_terminator=",\n"
            )
            if last:
                lines.tail(1).write_csv(out, include_header=False, quote_style="never", line_terminator="\n")
    else:
        out.write(b"\n")
    out.write(b"  ]\n}\n")


#: criteria per results key column: a result code + 1 (0 for a null) in base 5, 27 digits to an Int64
_KEY_DIGITS = 27
#: rows per step when making the keys (a million rows of twenty-odd Int64 columns at once would cost memory)
_KEY_SLICE = 100_000


def _per_results(
    report: Report, rows: pl.DataFrame, spell: Callable[[pl.Series], pl.Series | None]
) -> Callable[[int, int], pl.Series] | None:
    """For a text that depends on a candidate's results only (most of a compact JSON candidate's line):
    (start, length) -> that text for those rows of `rows`, spelled by `spell` (given rows of the screening frame)
    once per combination of results (a few thousand in a million candidates), from the first row that has it. A
    combination is found by a key of the screening frame's result codes: `rows` must be the report's table,
    row for row the frame's. None when that does not hold, or `spell` gives up: write every row."""
    s = report.screening
    ids = [cc.id for cc in s.rules.criteria]
    if not ids or not rows.height or report.table is None or report.table_head is not None:
        return None
    if s.frame.height != rows.height:
        return None
    chunks = [ids[i:i + _KEY_DIGITS] for i in range(0, len(ids), _KEY_DIGITS)]
    key = [
        pl.sum_horizontal(
            (pl.col(result_col(cid)).cast(pl.Int64) + 1).fill_null(0) * 5**i for i, cid in enumerate(chunk)
        ).alias(f"__k{j}")
        for j, chunk in enumerate(chunks)
    ]
    names = [f"__k{j}" for j in range(len(chunks))]
    keys = pl.concat([s.frame.slice(i, _KEY_SLICE).select(key) for i in range(0, s.frame.height, _KEY_SLICE)])
    first = keys.with_row_index("__row").unique(names, keep="first", maintain_order=True)
    texts = spell(first.get_column("__row"))
    if texts is None or len(texts) != first.height:
        return None
    spelled = first.select(names).with_columns(texts.alias("__text"))
    return lambda start, length: keys.slice(start, length).join(
        spelled, on=names, how="left", maintain_order="left"
    ).get_column("__text")


def _compact_line(report: Report, rows: pl.DataFrame) -> Callable[[int, int], pl.DataFrame]:
    """(start, length) -> those candidates' compact lines, "    " + the object polars' JSON encoder writes for
    `_compact_frame`'s row. The result cells are most of a line: their "results" object is encoded once per
    combination (`_per_results`), and the rest of the line around it."""
    s = report.screening
    ids = [cc.id for cc in s.rules.criteria]
    results = _per_results(
        report,
        rows,
        lambda at: s.frame.gather(at).select(result_labels(s)).select(pl.struct(ids).struct.json_encode()).to_series(),
    )
    if results is None:
        return lambda start, length: _compact_frame(report, _labelled(report, rows.slice(start, length), start)).select(
            pl.concat_str(pl.lit("    "), pl.struct(pl.all()).struct.json_encode())
        )
    before = ("record_id", "disposition", "primary_reason", "reasons", "still_needed", "to_correct")
    after = ("primary_reason_text", "still_needed_text")
    return lambda start, length: _compact_frame(report, rows.slice(start, length), results=False).select(
        pl.concat_str(
            pl.lit("    "),
            pl.struct(before).struct.json_encode().str.head(-1),  # without its closing brace
            pl.lit(',"results":'),
            results(start, length),
            pl.lit(","),
            pl.struct(after).struct.json_encode().str.slice(1),  # without its opening brace
        )
    )


_float_text = float.__repr__
_int_text = int.__repr__


class _NotPlain(Exception):
    """A value indented_json leaves to json.dumps (a type it does not know, which json.dumps may refuse)."""


def indented_json(value: Any, pad: str = "") -> str:
    """json.dumps(value, indent=2, ensure_ascii=False) with every line after the first starting with `pad`: the
    same text, built by a plain recursion over the types json.dumps knows (json's own indented layout is pure
    Python, generator upon generator: two thousand checklists took seconds). Anything else goes to json.dumps."""
    try:
        return _indented(value, pad)
    except (_NotPlain, RecursionError):
        return json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n" + pad)


def _json_float(x: float) -> str:
    # json.dumps' own spelling, allow_nan included
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "Infinity" if x > 0 else "-Infinity"
    return _float_text(x)


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return _json_string(key)
    if isinstance(key, float):
        return _json_string(_json_float(key))
    if key is True or key is False or key is None:
        return _json_string({True: "true", False: "false", None: "null"}[key])
    if isinstance(key, int):
        return _json_string(_int_text(key))
    raise _NotPlain


def _indented(value: Any, pad: str) -> str:
    # the order of json's own checks (str before int, bool before int, list and tuple alike)
    if isinstance(value, str):
        return _json_string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return _int_text(value)
    if isinstance(value, float):
        return _json_float(value)
    inner = pad + "  "
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        return "[\n" + inner + (",\n" + inner).join([_indented(x, inner) for x in value]) + "\n" + pad + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{\n" + inner + (",\n" + inner).join(
            [_json_key(k) + ": " + _indented(v, inner) for k, v in value.items()]
        ) + "\n" + pad + "}"
    raise _NotPlain


# ---------------------------------------------------------------------------------------------------------------
# CSV of candidates (one row each, one column per criterion)


def render_csv(report: Report) -> str:
    return _csv(*_csv_columns(report, report.rows))


#: rows per write of write_csv when it adds the criterion labels a slice at a time
_CSV_SLICE = 100_000


def write_csv(report: Report, out: BinaryIO) -> None:
    """render_csv's bytes written to `out`, without the whole text in memory first (nor, if the report's table
    has none, a million rows of criterion labels: they are added a slice at a time)."""
    rows = _every_row(report)
    if report.labels or rows is not report.table:
        _csv_frame(*_csv_columns(report, rows)).write_csv(out, line_terminator="\n")
        return
    for start in range(0, max(rows.height, 1), _CSV_SLICE):
        part = _labelled(report, rows.slice(start, _CSV_SLICE), start)
        _csv_frame(*_csv_columns(report, part)).write_csv(out, include_header=not start, line_terminator="\n")


def _csv_columns(report: Report, rows: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    crits = report.screening.rules.criteria
    stamp = report.screening.rules.stamp()
    out = rows.select(
        pl.col(report.screening.record_id).alias("record_id"),
        "disposition",
        "primary_reason",
        "reasons",
        "still_needed",
        "to_correct",
        *[cc.id for cc in crits],
        pl.lit(stamp["id"]).alias("ruleset_id"),
        pl.lit(stamp["version"]).alias("ruleset_version"),
        pl.lit(stamp["sha256"]).alias("ruleset_sha256"),
        pl.lit(report.screening.as_of.isoformat()).alias("as_of"),
        # words after the codes, so scripts reading the columns above by position keep working
        "primary_reason_text",
        pl.col("still_needed_text").str.replace_all(SEP, "; ", literal=True),
    )
    return out, ["disposition", *[cc.id for cc in crits]]


# ---------------------------------------------------------------------------------------------------------------
# Plain-text table for the terminal


def render_table(report: Report, *, limit: int | None = None, details: bool = False) -> str:
    """The terminal view: provenance, counts, one line per candidate (still needed in the forms' words); with
    `details`, each candidate's checklist with the criteria's text and the values as the forms label them."""
    s = report.screening
    stamp = s.rules.stamp()
    sm = report.summary
    vocab = report.vocab
    words = value_words_once(vocab)
    texts = criterion_words(s.rules)
    lines = [
        f"Screening against {stamp['id']} {stamp['version']} (sha256 {stamp['sha256'][:12]}) "
        f"as of {s.as_of.isoformat()}, trialkit {__version__}",
    ]
    if report.source:
        lines.append(f"Data: {report.source}")
    lines += [
        f"{sm.total} assessed: {sm.by_disposition['eligible']} eligible, {sm.by_disposition['ineligible']} "
        f"ineligible, {sm.by_disposition['pending']} pending",
        "",
    ]
    rows = [("record_id", "disposition", "primary reason", "still needed")]
    table = report.head(limit)
    for rid, disposition, primary, needed, correct in table.select(
        s.record_id, "disposition", "primary_reason", "still_needed_text", "to_correct"
    ).iter_rows():
        text = "; ".join(_listed(needed))
        if correct:
            fix = f"to correct: {'; '.join(_listed(correct))}"
            text = f"{text}; {fix}" if text else fix
        rows.append((rid, disposition, primary, text))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        lines.append(("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3]).rstrip())
    if limit is not None and report.total > limit:
        lines.append(f"... {report.total - limit} more")
    if details:
        for c in report.candidates if limit is None else report.candidates[:limit]:
            lines += [
                "",
                f"Record {c.record_id}: {c.disposition}"
                + (f", primary reason {c.primary_reason} ({texts.get(c.primary_reason, '')})" if c.primary_reason
                   else ""),
            ]
            for o in c.criteria:
                lines.append(f"  {o.id:<4} {o.kind:<9} {o.result:<14} {o.text}")
                for what, name, value in words(o):
                    shown = f"{what} ({name})" if what != name else name
                    lines.append(f"{'':<31}{shown}: {value}")
                if o.missing:
                    lines.append(f"{'':<31}MISSING: {', '.join(o.missing)}")
                if o.to_correct:
                    lines.append(f"{'':<31}TO CORRECT: {'; '.join(o.to_correct)}")
    sites = site_counts(report)
    if sites:
        lines += ["", "By site (REDCap data access group): assessed, eligible, ineligible, pending"]
        lines += [
            f"  {x['site']:<24} {x['assessed']:>6} {x['eligible']:>6} {x['ineligible']:>6} {x['pending']:>6}"
            for x in sites
        ]
    if sm.by_primary_reason:
        lines += ["", "Ineligible by primary reason:"]
        lines += [f"  {cid:<5} {n:>5}  {texts.get(cid, '')}" for cid, n in sm.by_primary_reason.items()]
    if sm.missing_forms:
        lines += ["", "Still needed by form (pending candidates):"]
        lines += [f"  {vocab.form(form):<40} {n}" for form, n in sm.missing_forms]
    if sm.missing:
        lines += ["", "Missing fields, by pending candidates they would help decide:"]
        lines += [f"  {_field_words(m.field, vocab):<60} {m.pending}" for m in sm.missing[:15]]
    if s.notes:  # how the data was read where it was not plain (rows that disagree, unnumbered instances, ...)
        lines += ["", "Notes:"]
        lines += [f"  - {note}" for note in s.notes]
    return "\n".join(_TERMINAL_UNSAFE.sub(_shown_control, line) for line in lines) + "\n"


#: control characters (line breaks, escapes) in the data's text, which the terminal table shows as text: a
#: line break would break the table's lines, an escape sequence would be run by the coordinator's terminal
_TERMINAL_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _shown_control(m: re.Match[str]) -> str:
    return repr(m.group(0))[1:-1]


def _field_words(label: str, vocab: Vocabulary) -> str:
    """A still-needed label with its words: `madrs_10` -> "MADRS item 10 (madrs_10)"; `atrq` -> the form's
    label for "no instance recorded"; `atrq.atrq_improvement` -> "<form>: <field label> (atrq_improvement)"."""
    if "." in label:
        form, name = label.split(".", 1)
        return f"{vocab.form(form)}: {vocab.field(name)} ({name})" if vocab.fields else label
    if label in vocab.forms and label not in vocab.form_of:
        return f"{vocab.form(label)}: none recorded ({label})"
    return f"{vocab.field(label)} ({label})" if label in vocab.fields else label


# ---------------------------------------------------------------------------------------------------------------
# Screening log (ICH E6 8.3.20 / NIDCR shape): no identifier fields, ever.

LOG_COLUMNS = (
    "screen_id",
    "consent_date",
    "consent_version",
    "screened_on",
    "evaluation_as_of",
    "ruleset",
    "ruleset_sha256",
    "disposition",
    "primary_reason",
    "all_reasons",
    "still_needed",
    "to_correct",
    "primary_reason_text",
    "still_needed_text",
)
_LOG_DISPOSITION = {"eligible": "eligible", "ineligible": "ineligible", "pending": "pending_data"}


_LOG_VALUES = ("consent_date", "consent_version")  # the data fields the screening log shows by default


def screening_log_frame(
    report: Report,
    *,
    consent_date: str | None = "consent_date",
    consent_version: str | None = "consent_version",
    identifiers: Iterable[str] = (),
) -> pl.DataFrame:
    """One row per candidate, every cell text. Columns from the data are read only when the field is not an
    identifier (PHI)."""
    s = report.screening
    banned = set(identifiers)
    rid = s.record_id
    stamp = s.rules.stamp()
    rows = _every_row(report)  # no criterion labels needed
    out = rows.select(
        pl.col(rid).alias("screen_id"),
        pl.lit("").alias("consent_date"),
        pl.lit("").alias("consent_version"),
        pl.lit("").alias("screened_on"),
        pl.lit(s.as_of.isoformat()).alias("evaluation_as_of"),
        pl.lit(f"{stamp['id']}@{stamp['version']}").alias("ruleset"),
        pl.lit(stamp["sha256"]).alias("ruleset_sha256"),
        pl.col("disposition").replace_strict(_LOG_DISPOSITION, return_dtype=pl.String),
        "primary_reason",
        pl.col("reasons").alias("all_reasons"),
        "still_needed",
        "to_correct",
        "primary_reason_text",
        pl.col("still_needed_text").str.replace_all(SEP, "; ", literal=True),
    )
    taken = {"consent_date": consent_date, "consent_version": consent_version, "screened_on": s.rules.reference_field}
    data = s.data
    picked = []
    for column, name in taken.items():
        if not name or name in banned or name not in data.columns:
            continue
        value = pl.col(name)
        text = value.dt.to_string("%Y-%m-%d") if data.schema[name] == pl.Date else value.cast(pl.String)
        picked.append(text.fill_null("").alias(column))
    if picked and data.height:
        values = data.select(pl.col(rid).cast(pl.String).alias("screen_id"), *picked)
        if values.height == out.height and values.get_column("screen_id").equals(out.get_column("screen_id")):
            out = out.with_columns(values.drop("screen_id"))  # same candidates, same order: no join needed
        else:
            joined = out.select("screen_id").join(values, on="screen_id", how="left", maintain_order="left")
            out = out.with_columns(joined.drop("screen_id").select(pl.all().fill_null("")))
    return out.select(list(LOG_COLUMNS))


def screening_log_rows(report: Report, **kwargs: Any) -> list[dict[str, str]]:
    return screening_log_frame(report, **kwargs).to_dicts()


def render_screening_log(report: Report, *, identifiers: Sequence[str] = ()) -> str:
    return _csv(screening_log_frame(report, identifiers=identifiers), ["disposition"])


def write_screening_log(report: Report, out: BinaryIO, *, identifiers: Sequence[str] = ()) -> None:
    """render_screening_log's bytes written to `out`."""
    _csv_frame(screening_log_frame(report, identifiers=identifiers), ["disposition"]).write_csv(
        out, line_terminator="\n"
    )


def _csv(frame: pl.DataFrame, words: Collection[str] = ()) -> str:
    return _csv_frame(frame, words).write_csv(line_terminator="\n")


def _csv_frame(frame: pl.DataFrame, words: Collection[str] = ()) -> pl.DataFrame:
    """The frame as CSV for spreadsheets holds it: formula-like text defused, blank cells empty (polars quotes an
    empty string). `words`: columns whose cells come from trialkit's own fixed words (result labels,
    dispositions), which no spreadsheet reads as a formula: not scanned (a million rows of twenty such columns
    cost a second)."""
    text = [c for c, dtype in frame.schema.items() if dtype == pl.String]
    blanked = frame.with_columns(pl.when(pl.col(c) != "").then(pl.col(c)).alias(c) for c in text)
    fixed = set(words)
    safe = safe_frame(blanked.select(c for c in blanked.columns if c not in fixed))
    return blanked.with_columns(safe.get_columns())


# ---------------------------------------------------------------------------------------------------------------
# HTML


def _flow(report: Report) -> dict[str, Any]:
    """The CONSORT screening stages as the page draws them (boxes in HTML, so the text reflows on a phone and
    prints at the page's size): excluded by primary reason, split into inclusion not met / exclusion met, with
    each criterion's text; pending with the forms still needed most."""
    f = report.funnel
    kinds = {cc.id: cc.kind.value for cc in report.screening.rules.criteria}
    incl = [(cid, text, n) for cid, text, n in f.excluded.items if kinds.get(cid) == "inclusion"]
    excl = [(cid, text, n) for cid, text, n in f.excluded.items if kinds.get(cid) != "inclusion"]
    forms = [(report.vocab.form(form), n) for form, n in report.summary.missing_forms]
    return {
        "incl": incl,
        "excl": excl,
        "n_incl": sum(n for *_, n in incl),
        "n_excl": sum(n for *_, n in excl),
        "forms": forms,
    }


SITE_COLUMN = "redcap_data_access_group"
#: the site of a candidate without a data access group: the site table, the site filter and the candidate rows
#: must say the same (REDCap's unique group names cannot hold brackets or spaces, so no group is called this)
NO_GROUP = "(no group)"


def site_counts(report: Report) -> list[dict[str, Any]]:
    """Per REDCap data access group (site), when the data carries one: assessed, each disposition, and the most
    frequent primary reason. Empty when the data has no `redcap_data_access_group` column."""
    s = report.screening
    if SITE_COLUMN not in s.data.columns:
        return []
    rid = s.record_id
    dag = pl.col(SITE_COLUMN).cast(pl.String)
    sites = s.data.select(pl.col(rid).cast(pl.String), pl.when(dag != "").then(dag).otherwise(pl.lit(NO_GROUP)))
    # the result table's first columns, read from the screening frame (a report may hold the first rows only)
    results = s.frame.select(
        pl.col(rid).cast(pl.String),
        pl.col(DISPOSITION_COL).cast(pl.String).alias("disposition"),
        pl.col(PRIMARY_COL).fill_null("").alias("primary_reason"),
    )
    joined = results.join(sites, on=rid, how="left")
    joined = joined.with_columns(pl.col(SITE_COLUMN).fill_null(NO_GROUP))
    out = []
    for (site,), group in joined.group_by(SITE_COLUMN, maintain_order=True):
        counts = dict(group.group_by("disposition").len().iter_rows())
        reasons = group.filter(pl.col("primary_reason") != "").group_by("primary_reason").len().sort(
            ["len", "primary_reason"], descending=[True, False]
        )
        out.append({
            "site": site,
            "assessed": group.height,
            **{d: counts.get(d, 0) for d in ("eligible", "ineligible", "pending")},
            "top_reason": reasons.row(0) if reasons.height else None,
        })
    return sorted(out, key=lambda x: x["site"])


def _problem_counts(report: Report) -> dict[str, int]:
    """Per candidate, how many fields held a value screening could not use (they left criteria unknown)."""
    problems = report.screening.problems
    if problems is None or problems.height == 0:
        return {}
    counts = problems.filter(pl.col("check") != "input").group_by("record").agg(pl.col("field").n_unique())
    return dict(counts.iter_rows())


def _forms_of(labels: list[str], vocab: Vocabulary) -> list[str]:
    """The forms still-needed labels fall on (for the candidate table's filter)."""
    out: dict[str, None] = {}
    for label in labels:
        if "." in label:
            out.setdefault(label.split(".", 1)[0], None)
        elif label in vocab.forms and label not in vocab.form_of:
            out.setdefault(label, None)
        else:
            out.setdefault(vocab.form_of.get(label, "other"), None)
    return list(out)


#: Candidates listed in the HTML table (a page of a million rows helps nobody: the CSV and JSON hold them all).
MAX_ROWS = 5000


def _table_rows(report: Report, limit: int) -> list[dict[str, Any]]:
    rid = report.screening.record_id
    vocab = report.vocab
    problems = _problem_counts(report)
    sites: dict[str, str] = {}
    data = report.screening.data
    if SITE_COLUMN in data.columns:
        sites = dict(data.head(limit).select(pl.col(rid).cast(pl.String), pl.col(SITE_COLUMN).cast(pl.String))
                     .iter_rows())
    out = []
    for row in report.head(limit).iter_rows(named=True):
        needed = _listed(row["still_needed"])
        out.append({
            "record_id": row[rid],
            "disposition": row["disposition"],
            "primary_reason": row["primary_reason"] or None,
            "primary_reason_text": row["primary_reason_text"],
            "reasons": _listed(row["reasons"]),
            "still_needed": needed,
            "still_needed_text": _listed(row["still_needed_text"]),
            "forms": _forms_of(needed, vocab),
            "to_correct": _listed(row["to_correct"]),
            "problems": problems.get(row[rid], 0),
            "site": (sites.get(row[rid]) or NO_GROUP) if sites else "",
        })
    return out


_BADGE = {"met": "met", "not_met": "notmet", "unknown": "unknown", "not_applicable": "na"}


def _criterion_rows(
    vocab: Vocabulary, needed: Callable[[Sequence[str]], list[str]]
) -> Callable[[CriterionOutcome], str]:
    """outcome -> its row of a checklist table in the page, escaped. Two thousand checklists have forty thousand
    rows: written here, with the criterion's own cells escaped once per criterion and result, they cost a
    fraction of the same markup in the template (an escape call per value)."""
    from markupsafe import Markup, escape

    heads: dict[tuple[str, str, str, str], str] = {}
    words = value_words_once(vocab)
    spans: dict[tuple[str, str, str], str] = {}  # a value in words, as the page shows it (the same ones recur)

    def span(w: tuple[str, str, str]) -> str:
        what, name, v = w
        spans[w] = text = (
            f'<span class="v">{escape(what)}'
            + (f" <code>{escape(name)}</code>" if what != name else "")
            + f": <strong>{escape(v)}</strong></span>"
        )
        return text

    def row(o: CriterionOutcome) -> str:
        key = (o.id, o.kind, o.text, o.result)
        head = heads.get(key)
        if head is None:
            suffix = "" if o.result in ("unknown", "not_applicable") else (
                "-incl" if o.kind == "inclusion" else "-excl"
            )
            head = heads[key] = (
                f'<td data-label="criterion ({escape(o.kind)})"><strong>{escape(o.id)}</strong> '
                f'<span class="crit-text">{escape(o.text)}</span></td>\n'
                f'        <td data-label="result"><span class="badge {_BADGE[o.result]}{suffix}">'
                f'{escape(o.result).replace("_", " ")}</span></td>\n'
            )
        values = "".join(spans.get(w) or span(w) for w in words(o))
        missing = ""
        if o.missing:
            missing = f'<span class="missing">{"; ".join(escape(x) for x in needed(o.missing))}</span>'
        if o.to_correct:
            missing += f' <span class="missing correct">to correct: {"; ".join(escape(x) for x in o.to_correct)}</span>'
        decides = ' class="decides"' if o.decides_ineligible else ""
        return Markup(
            f"<tr{decides}>\n        {head}"
            f'        <td class="values" data-label="values">{values}</td>\n'
            f'        <td data-label="missing">{missing}</td>\n'
            "      </tr>"
        )

    return row


def _checklist_rows(row: Callable[[CriterionOutcome], str]) -> Callable[[Sequence[CriterionOutcome]], str]:
    """A checklist's rows, each on its own line below the table body's opening tag: one call from the template
    per checklist, not one per criterion."""
    from markupsafe import Markup

    return lambda outcomes: Markup("".join(f"      {row(o)}\n" for o in outcomes))


#: Above this many candidates a printout leaves the checklists out unless the reader ticks them back in.
PRINT_SUMMARY_ABOVE = 50


def render_html(
    report: Report,
    *,
    generated_at: str | None = None,
    title: str | None = None,
    max_checklists: int = MAX_CHECKLISTS,
    max_rows: int = MAX_ROWS,
    summary: bool | None = None,
) -> str:
    """A self-contained page (one inline script, no network). `summary`: print without the checklists (default:
    when there are more than PRINT_SUMMARY_ABOVE candidates); the reader can switch it on the page."""
    from jinja2 import Environment, select_autoescape

    env = Environment(
        autoescape=select_autoescape(default=True, default_for_string=True), trim_blocks=True, lstrip_blocks=True
    )
    source = resources.files("trialkit.screening").joinpath("templates", "report.html.j2").read_text("utf-8")
    template = env.from_string(source)
    s = report.screening
    rows = _table_rows(report, max_rows)
    vocab = report.vocab
    items = form_items(s.rules, vocab)
    checklists = report.candidates[:max_checklists]
    by_id = {r["record_id"]: r for r in rows}
    return template.render(
        title=title or f"Screening report: {s.rules.ruleset.title}",
        ruleset=s.rules.ruleset,
        stamp=s.rules.stamp(),
        as_of=s.as_of.isoformat(),
        reference_field=s.rules.reference_field,
        notes=s.notes,
        summary=report.summary,
        candidates=rows,
        total=report.total,
        checklists=checklists,
        checklist_rows=by_id,
        criteria=s.rules.criteria,
        funnel=report.funnel,
        flow=_flow(report),
        sites=site_counts(report),
        has_sites=SITE_COLUMN in s.data.columns,
        reason_options=[(cc.id, cc.criterion.text) for cc in s.rules.criteria if cc.id in report.summary.by_reason],
        form_options=[(f, vocab.form(f) if f != "other" else "Other") for f in dict.fromkeys(
            f for r in rows for f in r["forms"])],
        needed_words=lambda labels: describe_needed(labels, vocab, items),
        criterion_rows=_checklist_rows(_criterion_rows(vocab, lambda labels: describe_needed(labels, vocab, items))),
        field_words=lambda label: _field_words(label, vocab),
        form_words=vocab.form,
        texts=criterion_words(s.rules),
        provenance=report.provenance,
        version=__version__,
        print_summary=summary if summary is not None else report.total > PRINT_SUMMARY_ABOVE,
        generated_at=generated_at,
    )


def render(report: Report, fmt: str, **kwargs: Any) -> str:
    if fmt == "json":
        return render_json(report)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "html":
        return render_html(report, **kwargs)
    if fmt == "table":
        return render_table(report)
    raise UsageError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
