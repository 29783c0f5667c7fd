"""Real data is messy: every reader and validation error names file, line/row and column."""

from __future__ import annotations

import bz2
import json

import pytest

from lftrain.config import load_recipe
from lftrain.data.prepare import prepare_data, read_examples
from lftrain.data.readers import read_table
from lftrain.errors import EXIT_INPUT, DataError
from lftrain.tasks import build_task


def recipe_for(train, **data):
    return load_recipe(data={"model": {"path": "m"}, "data": {"train": str(train), **data},
                             "task": {"labels": None}})


def examples(path, **data):
    r = recipe_for(path, **data)
    return read_examples(str(path), r.data, build_task(r.task))


def test_csv_with_embedded_newlines_keeps_rows_and_lines(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('text,label\n"first line\nsecond line",pos\nplain,neg\n"a, with comma",pos\n')
    t = read_table(str(p))
    assert [r["text"] for r in t.rows] == ["first line\nsecond line", "plain", "a, with comma"]
    assert t.lines == [2, 4, 5] and t.row_numbers == [1, 2, 3]


def test_whitespace_is_normalised(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('text,label\n"  spaced \t out\n text ", pos \n')
    ex = examples(p)
    assert ex.fields["text"] == ["spaced out text"] and ex.fields["label"] == ["pos"]


def test_non_utf8_names_row_and_column_and_encoding_option_reads_it(tmp_path):
    p = tmp_path / "d.csv"
    p.write_bytes("text,label\nfine,pos\ncaf\xe9 au lait,neg\n".encode("latin-1"))
    with pytest.raises(DataError) as e:
        read_table(str(p))
    msg = str(e.value)
    assert "line 3" in msg and "row 2" in msg and "column 'text'" in msg and "0xe9" in msg
    assert "data.encoding" in msg and e.value.exit_code == EXIT_INPUT
    assert read_table(str(p), encoding="latin-1").rows[1]["text"] == "café au lait"


def test_utf8_bom_is_not_part_of_the_first_column(tmp_path):
    p = tmp_path / "d.csv"
    p.write_bytes(b"\xef\xbb\xbftext,label\nx,pos\n")
    assert read_table(str(p)).columns == ["text", "label"]


def test_wrong_field_count_names_line(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,label\nok,pos\ntoo,many,fields\n")
    with pytest.raises(DataError, match=r"line 3, row 2: expected 2 fields"):
        read_table(str(p))


def test_empty_and_header_only_files(tmp_path):
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_table(str(empty))
    header = tmp_path / "h.csv"
    header.write_text("text,label\n")
    with pytest.raises(DataError, match="header but no rows"):
        examples(header)


def test_missing_column_lists_available_columns(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("review,label\nx,pos\n")
    with pytest.raises(DataError, match=r"no column 'text' \(columns: review, label\); set task.text"):
        examples(p)


def test_empty_text_names_row_and_column(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('text,label\nfine,pos\n"   ",neg\n')
    with pytest.raises(DataError, match=r"d.csv, line 3, row 2, column 'text': empty text"):
        examples(p)


def test_missing_label_names_row(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"text": "a", "label": "pos"}) + "\n" + json.dumps({"text": "b", "label": None}) + "\n")
    with pytest.raises(DataError, match=r"line 2, row 2, column 'label': missing label"):
        examples(p)


def test_malformed_json_line_names_line(tmp_path):
    p = tmp_path / "d.jsonl"
    lines = [json.dumps({"text": f"t{i}", "label": "pos"}) for i in range(12)]
    lines[9] = '{"text": "broken", "label": '
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"d.jsonl, line 10: malformed JSON"):
        read_table(str(p))


def test_labels_as_strings_or_integers(tmp_path):
    p = tmp_path / "d.jsonl"
    rows = [{"text": "a", "label": 1}, {"text": "b", "label": "0"}, {"text": "c", "label": 1.0},
            {"text": "d", "label": " 1 "}]
    p.write_text("\n".join(json.dumps(r) for r in rows))
    ex = examples(p)
    assert ex.fields["label"] == ["1", "0", "1", "1"]
    r = recipe_for(p, test_fraction=0, eval_fraction=0, duplicates="keep")
    task = build_task(r.task.model_copy(update={"labels": ["neg", "pos"]}))
    data = prepare_data(r, task)  # integers index into the named labels
    assert [task.labels.lookup(v) for v in data.train.fields["label"]] == [1, 0, 1, 1]


def test_unknown_label_errors_with_row_or_is_dropped_by_policy(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,label\na,pos\nb,neg\nc,maybe\n")
    r = recipe_for(p, test_fraction=0, eval_fraction=0)
    task = build_task(r.task.model_copy(update={"labels": ["neg", "pos"]}))
    with pytest.raises(DataError, match=r"line 4, row 3, column 'label': unknown label 'maybe'"):
        prepare_data(r, task)
    p.write_text("text,label\na,pos\nb,neg\n,maybe\n")  # an excluded row is not validated further
    r2 = recipe_for(p, test_fraction=0, eval_fraction=0, unknown_labels="drop")
    data = prepare_data(r2, build_task(r2.task.model_copy(update={"labels": ["neg", "pos"]})))
    assert data.train.fields["text"] == ["a", "b"]
    assert data.stats[f"{p}:unknown_labels_dropped"] == {"maybe": 1}


def test_duplicates_dropped_before_split(tmp_path):
    p = tmp_path / "d.csv"
    rows = "".join(f"text {i % 20},{'pos' if i % 2 else 'neg'}\n" for i in range(60))
    p.write_text("text,label\n" + rows)
    r = recipe_for(p, test_fraction=0.25, eval_fraction=0)
    data = prepare_data(r, build_task(r.task))
    assert data.stats["train:duplicates_dropped"] == 40
    assert not set(data.train.fields["text"]) & set(data.test.fields["text"])  # no leakage through copies


def test_split_is_stratified_and_seeded(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,label\n" + "".join(f"t{i},{'a' if i < 80 else 'b'}\n" for i in range(100)))
    r = recipe_for(p, test_fraction=0.2, eval_fraction=0.1)
    d1, d2 = prepare_data(r, build_task(r.task)), prepare_data(r, build_task(r.task))
    assert d1.test.fields["text"] == d2.test.fields["text"]
    assert sorted(d1.test.fields["label"]).count("b") == 4 and len(d1.test) == 20
    assert len(d1.eval) == 10 and len(d1.train) == 70


def test_compressed_csv_parquet_and_saved_dataset(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset, DatasetDict

    bz = tmp_path / "d.csv.bz2"
    bz.write_bytes(bz2.compress(b"text,label\nx,pos\ny,neg\n"))
    assert len(read_table(str(bz)).rows) == 2
    pq.write_table(pa.table({"text": ["x", "y"], "label": [0, 1]}), tmp_path / "d.parquet")
    assert examples(tmp_path / "d.parquet").fields["label"] == ["0", "1"]
    DatasetDict({"train": Dataset.from_dict({"text": ["x"], "label": ["pos"]})}).save_to_disk(tmp_path / "ds")
    with pytest.raises(DataError, match="name a split"):
        read_table(str(tmp_path / "ds"))
    assert read_table(f"{tmp_path / 'ds'}#train").rows == [{"text": "x", "label": "pos"}]


def test_text_pairs(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("premise,hypothesis,label\nA man sleeps,Someone rests,entailment\n")
    r = load_recipe(data={"model": {"path": "m"}, "data": {"train": str(p)},
                          "task": {"text": "premise", "text_pair": "hypothesis"}})
    ex = read_examples(str(p), r.data, build_task(r.task))
    assert ex.fields["text_pair"] == ["Someone rests"]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="nope.csv: file not found"):
        read_table(str(tmp_path / "nope.csv"))
