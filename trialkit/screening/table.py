"""The result table: one row per candidate, every cell text, built column-wise from the screening frame.

CSV, the screening log, the JSON candidate list and the terminal table are written from it, so a million
candidates never become a million Python objects; per-criterion checklists with values
(`trialkit.screening.explain.candidates`) are built only for the candidates a report shows.

Still-needed names are decoded once per distinct combination of missing-field masks (there are few), and
the values to correct are looked up only for the candidates that have any.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from trialkit.screening.engine import DISPOSITION_COL, PRIMARY_COL, Screening, decode_mask, missing_col, result_col
from trialkit.screening.outcomes import Disposition, Result, deciding_result
from trialkit.screening.words import Vocabulary, criterion_words, describe_needed, form_items, vocabulary

#: Separator inside the reasons, still_needed and to_correct cells.
SEP = ";"


def result_table(screening: Screening, vocab: Vocabulary | None = None, *, labels: bool = True) -> pl.DataFrame:
    """record id, disposition, primary_reason, reasons, still_needed, to_correct (blank unless pending), then
    one column per criterion with its result label (met, not_met, unknown, not_applicable), then the words:
    primary_reason_text (the criterion's protocol text) and still_needed_text (grouped by form and instance,
    phrases separated by SEP). Without `labels`, no criterion columns: a writer of a million candidates adds
    them a slice at a time (`result_labels`) instead of holding twenty-odd columns of a million texts."""
    rules = screening.rules
    rid = screening.record_id
    frame = screening.frame
    reasons = _reasons(screening)
    needed, correct = _needed_and_correct(screening)
    vocab = vocab or vocabulary(None, rules)
    texts = criterion_words(rules)
    table = frame.select(
        pl.col(rid).cast(pl.String),
        pl.col(DISPOSITION_COL).cast(pl.String).alias("disposition"),
        pl.col(PRIMARY_COL).fill_null("").alias("primary_reason"),
        reasons.alias("reasons"),
        needed.alias("still_needed"),
        correct.alias("to_correct"),
        *(result_labels(screening) if labels else []),
    )
    # only candidates with something still needed (the pending ones, a few in a hundred) have words for it
    at = (table.get_column("still_needed") != "").arg_true()
    words = pl.repeat("", table.height, dtype=pl.String, eager=True)
    if len(at):
        words = words.scatter(at, needed_words(screening, table.select(rid, "still_needed").gather(at), vocab))
    return table.with_columns(
        pl.col("primary_reason").replace_strict(texts, default="", return_dtype=pl.String).alias(
            "primary_reason_text"
        ),
        words.alias("still_needed_text"),
    )


_NAMES = pl.Series([r.label for r in sorted(Result)], dtype=pl.String)
assert [r.value for r in sorted(Result)] == list(range(len(_NAMES)))


def result_labels(screening: Screening) -> list[pl.Expr]:
    """Over the screening frame (or a slice of it), one column per criterion: its result label."""
    # a label looked up by position (the codes are 0..3): a third of what a mapping costs at 1M rows
    return [pl.lit(_NAMES).gather(pl.col(result_col(cc.id))).alias(cc.id) for cc in screening.rules.criteria]


def _reasons(screening: Screening) -> pl.Series:
    """Per candidate, the criteria that make it ineligible, in rule order, joined by SEP. Computed as one bit per
    criterion and spelled once per distinct combination: a million candidates have a few hundred."""
    criteria = screening.rules.criteria
    if not criteria:
        return pl.Series([""] * len(screening), dtype=pl.String)
    chunks = [criteria[i:i + 62] for i in range(0, len(criteria), 62)]  # 62 bits of an Int64 per key column
    keys = screening.frame.select(
        pl.sum_horizontal(
            (pl.col(result_col(cc.id)) == deciding_result(cc.kind).value).fill_null(False).cast(pl.Int64) * (1 << i)
            for i, cc in enumerate(chunk)
        ).alias(f"k{j}")
        for j, chunk in enumerate(chunks)
    )
    return _spelled_once(
        keys,
        lambda row: SEP.join(
            cc.id for chunk, key in zip(chunks, row, strict=True) for i, cc in enumerate(chunk) if key >> i & 1
        ),
    )


def _spelled_once(keys: pl.DataFrame, spell: Callable[[tuple], str]) -> pl.Series:
    """Per row of `keys`, `spell(row)`, called once per distinct row (a million candidates have a few hundred
    combinations of results or missing fields); "" where a key is blank."""
    distinct = keys.unique()
    words = pl.Series("__spelled", [spell(row) for row in distinct.iter_rows()], dtype=pl.String)
    looked = keys.join(distinct.with_columns(words), on=keys.columns, how="left", maintain_order="left")
    return looked.get_column("__spelled").fill_null("")


def needed_words(screening: Screening, table: pl.DataFrame, vocab: Vocabulary) -> pl.Series:
    """still_needed in words, per row. Phrases are built once per distinct still-needed cell; a candidate that
    lacks a field of some instances gets its own, naming the instances ("#2 (Citalopram)")."""
    rid = screening.record_id
    items = form_items(screening.rules, vocab)
    cells = table.get_column("still_needed")
    out: dict[str, str] = {}
    for cell in cells.unique().to_list():
        if cell:
            out[cell] = SEP.join(describe_needed(cell.split(SEP), vocab, items))
    text = cells.replace_strict(out, default="", return_dtype=pl.String) if out else pl.Series([""] * len(cells))
    per_instance = table.filter(pl.col("still_needed").str.contains(".", literal=True)).select(rid, "still_needed")
    if per_instance.height == 0:
        return text
    gaps = instance_gaps(screening, per_instance, vocab)
    fixed = {
        r: SEP.join(describe_needed(cell.split(SEP), vocab, items, gaps.get(r, {})))
        for r, cell in per_instance.iter_rows()
    }
    at = table.get_column(rid).is_in(list(fixed)).arg_true()
    values = [fixed[r] for r in table.get_column(rid).gather(at).to_list()]
    return text.clone().scatter(at, pl.Series(values, dtype=pl.String)) if len(at) else text


def instance_gaps(screening: Screening, rows: pl.DataFrame, vocab: Vocabulary) -> dict[str, dict[str, list[str]]]:
    """record -> `form.field` -> the instances where that field is blank, named "#2 (Citalopram)" by the
    instrument's first choice field (a choice label, never free text)."""
    rid = screening.record_id
    wanted: dict[str, set[str]] = {}
    for record, cell in rows.iter_rows():
        wanted[record] = {x for x in cell.split(SEP) if "." in x}
    out: dict[str, dict[str, list[str]]] = {}
    forms = {x.split(".", 1)[0] for labels in wanted.values() for x in labels}
    for form in forms:
        inst = screening.instances.get(form)
        if inst is None or inst.height == 0:
            continue
        mine = inst.with_columns(pl.col(rid).cast(pl.String)).filter(pl.col(rid).is_in(list(wanted)))
        namer = vocab.instance_name.get(form)
        for row in mine.iter_rows(named=True):
            n = row.get("redcap_repeat_instance")
            head = f"#{int(n)}" if isinstance(n, int | float) else "#?"
            if namer and row.get(namer) is not None:
                head += f" ({vocab.value(namer, row[namer])})"
            for label in wanted[row[rid]]:
                f, column = label.split(".", 1)
                if f == form and column in row and row[column] is None:
                    out.setdefault(row[rid], {}).setdefault(label, []).append(head)
    return out


def _needed_and_correct(screening: Screening) -> tuple[pl.Series, pl.Series]:
    from trialkit.screening.explain import _problems_by_record, _split_unusable

    rules = screening.rules
    frame = screening.frame
    masks = [missing_col(cc.id) for cc in rules.criteria]
    blank = pl.Series([""] * frame.height, dtype=pl.String)
    if not masks:
        return blank, blank
    pending = frame.get_column(DISPOSITION_COL).cast(pl.String) == Disposition.PENDING.value
    unknown = [
        pl.when(pl.col(result_col(cc.id)) == Result.UNKNOWN.value).then(pl.col(missing_col(cc.id))).otherwise(0)
        for cc in rules.criteria
    ]
    at = pending.arg_true()
    # only pending candidates have anything still needed: the others are never looked up
    live = frame.select(unknown).gather(at)
    if live.height == 0:
        return blank, blank

    def spell(row: tuple) -> str:
        names: dict[str, None] = {}
        for cc, mask in zip(rules.criteria, row, strict=True):
            for name in decode_mask(cc, mask or 0):
                names.setdefault(name, None)
        return SEP.join(names)

    needed = blank.clone().scatter(at, _spelled_once(live, spell))
    correct = blank
    problems = _problems_by_record(screening)
    if problems:
        rid = screening.record_id
        ids = frame.get_column(rid).cast(pl.String)
        rows = (ids.is_in(list(problems)) & pending).arg_true().to_list()
        needed = needed.clone()
        fixes = [""] * frame.height
        for i in rows:
            labels = tuple(n for n in needed[i].split(SEP) if n)
            still, fix = _split_unusable(labels, problems[ids[i]])
            needed[i] = SEP.join(still)
            fixes[i] = SEP.join(dict.fromkeys(fix))
        correct = pl.Series(fixes, dtype=pl.String)
    return needed, correct
