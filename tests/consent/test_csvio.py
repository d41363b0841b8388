"""CSV input: encoding, header checks, row numbering, malformed rows and the rejects file."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from izin.consent import csvio
from izin.consent.csvio import FIELD_LIMIT, MAX_CELL_CHARS, CsvInput, Row, batched
from izin.errors import InputError


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def make(data: bytes | str, name: str = "in.csv") -> Path:
    path = Path(name)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def read(data: bytes | str, required: tuple[str, ...] = ("external_id",)) -> tuple[list[str], list[tuple], list[tuple]]:
    """(columns, [(line, cells)], [(line, reason)]) of a file."""
    with CsvInput(make(data), required) as source:
        rows = [(r.line, r.cells) for r in source.rows()]
        return source.columns, rows, [(r.line, why) for r, why in source.rejected]


def input_error(data: bytes | str, required: tuple[str, ...] = ("external_id",)) -> InputError:
    make(data)
    with pytest.raises(InputError) as caught:
        CsvInput("in.csv", required)
    assert caught.value.exit_code == 2
    return caught.value


def read_rejects(path: str | Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


# -- encoding -------------------------------------------------------------------------------------

def test_utf8_with_and_without_bom_read_alike():
    text = "external_id,first_name\nC1,Ayşe\nC2,Çağrı\n"
    plain = read(text)
    assert plain == (["external_id", "first_name"], [(2, ["C1", "Ayşe"]), (3, ["C2", "Çağrı"])], [])
    assert read(b"\xef\xbb\xbf" + text.encode()) == plain


@pytest.mark.parametrize(("encoding", "name", "byte"), [
    ("cp1254", "Şule", 0xDE),       # Windows Turkish, what Excel saves as plain "CSV"
    ("iso-8859-9", "Gülşen", 0xFC),  # Latin-5
    ("latin-1", "Gül", 0xFC),
])
def test_legacy_turkish_encodings_are_refused_with_file_and_line(encoding, name, byte):
    error = input_error(f"external_id,first_name\nC1,Ayse\nC2,{name}\n".encode(encoding))
    assert (error.file, error.line) == ("in.csv", 3)
    assert str(error) == (f"in.csv:3: is not UTF-8 (byte 0x{byte:02x}); save the file as UTF-8 "
                          "(Excel: CSV UTF-8) and import again")


def test_windows_1254_s_cedilla_is_byte_fe():
    error = input_error("external_id,first_name\nC1,Ayşe\n".encode("cp1254"))
    assert str(error) == "in.csv:2: is not UTF-8 (byte 0xfe); save the file as UTF-8 (Excel: CSV UTF-8) and import again"


def test_bad_byte_right_after_a_newline_in_a_file_with_bom():
    # the decoder strips the BOM before it looks: the line and byte must still be the file's own
    error = input_error(b"\xef\xbb\xbfexternal_id,a\n\xfe,b\n")
    assert (error.line, str(error)) == (2, "in.csv:2: is not UTF-8 (byte 0xfe); save the file as UTF-8 "
                                           "(Excel: CSV UTF-8) and import again")


def test_bad_byte_after_a_character_split_across_read_chunks(monkeypatch):
    monkeypatch.setattr(csvio, "_CHUNK", 8)
    data = b"external_id\nC1\n" + "ş".encode() + b"\xff\n"
    assert data[15:17] == "ş".encode()  # 'ş' straddles the second and third 8-byte chunks
    error = input_error(data)
    assert (error.line, str(error)) == (3, "in.csv:3: is not UTF-8 (byte 0xff); save the file as UTF-8 "
                                           "(Excel: CSV UTF-8) and import again")


def test_file_ending_inside_a_character():
    error = input_error(b"external_id\nC1\xc5")
    assert str(error) == "in.csv: ends in the middle of a UTF-8 character; save the file as UTF-8"


# -- the header -----------------------------------------------------------------------------------

def test_missing_file():
    with pytest.raises(InputError) as caught:
        CsvInput("nope.csv", ("external_id",))
    assert str(caught.value) == "nope.csv: no such file; check the path"


def test_a_folder_is_not_a_file(in_tmp):
    (in_tmp / "dir.csv").mkdir()
    with pytest.raises(InputError, match=r"^dir\.csv: no such file; check the path$"):
        CsvInput("dir.csv", ("external_id",))


@pytest.mark.parametrize("data", ["", "\n", " , ,\n", b"\xef\xbb\xbf"])
def test_empty_file_or_header(data):
    assert str(input_error(data)) == ("in.csv:1: is empty; the first line must name the columns, "
                                      "e.g. external_id,email,phone")


def test_missing_required_column_names_it_and_the_header():
    error = input_error("id,email\nC1,a@b.co\n")
    assert (error.line, str(error)) == (1, "in.csv:1: missing required column 'external_id'; the header has: id, email")


def test_first_missing_required_column_is_named():
    assert str(input_error("external_id,event\n", ("external_id", "event", "occurred_at"))) == (
        "in.csv:1: missing required column 'occurred_at'; the header has: external_id, event")


def test_semicolon_separated_file_gets_a_hint():
    assert str(input_error("external_id;email\nC1;a@b.co\n")) == (
        "in.csv:1: missing required column 'external_id'; the header has: external_id;email "
        "(the columns are separated by ';'; save the file comma-separated, Excel: CSV UTF-8)")


def test_duplicate_header():
    assert str(input_error("external_id,email, email \n")) == (
        "in.csv:1: column 'email' appears twice in the header; keep one")


def test_unnamed_columns_may_repeat():
    # Excel leaves trailing commas when empty columns were once formatted
    assert read("external_id,email,,\nC1,a@b.co,,\n") == (["external_id", "email", "", ""],
                                                         [(2, ["C1", "a@b.co", "", ""])], [])


def test_header_cells_are_stripped():
    assert read(" external_id , email\nC1,x\n")[0] == ["external_id", "email"]


def test_too_many_columns():
    header = ",".join(["external_id"] + [f"c{i}" for i in range(1000)])
    assert str(input_error(header + "\n")) == "in.csv:1: has 1001 columns; at most 1000 are accepted"


def test_header_only_has_no_rows():
    assert read("external_id,email\n") == (["external_id", "email"], [], [])


# -- rows and their line numbers ------------------------------------------------------------------

def test_line_numbers_count_the_header_as_line_1_and_skip_blank_lines():
    data = "external_id,a\n\nC1,x\n   ,  \n\nC2,y\n"
    assert read(data)[1] == [(3, ["C1", "x"]), (6, ["C2", "y"])]


def test_multi_line_quoted_cells_start_their_row_on_the_first_line():
    data = 'external_id,note\nC1,"one\ntwo\nthree"\nC2,plain\nC3,"x\r\ny"\nC4,z\n'
    assert read(data)[1] == [(2, ["C1", "one\ntwo\nthree"]), (5, ["C2", "plain"]), (6, ["C3", "x\r\ny"]),
                             (8, ["C4", "z"])]


def test_crlf_line_endings():
    assert read(b"external_id,a\r\nC1,x\r\n\r\nC2,y\r\n")[1] == [(2, ["C1", "x"]), (4, ["C2", "y"])]


def test_last_line_without_newline():
    assert read("external_id,a\nC1,x")[1] == [(2, ["C1", "x"])]


def test_wrong_cell_count_is_rejected_with_its_line():
    data = "external_id,a,b\nC1,x\nC2,x,y\nC3,x,y,z\n"
    assert read(data)[1:] == ([(3, ["C2", "x", "y"])],
                              [(2, "row: has 2 cells but the header has 3"), (4, "row: has 4 cells but the header has 3")])


def test_nul_byte_is_rejected():
    assert read(b"external_id,a\nC1,x\x00y\nC2,ok\n")[1:] == ([(3, ["C2", "ok"])],
                                                             [(2, "row: contains a NUL character")])


def test_cell_over_the_limit_is_rejected():
    big = "x" * (MAX_CELL_CHARS + 1)
    assert read(f"external_id,a\nC1,{big}\nC2,ok\n")[1:] == (
        [(3, ["C2", "ok"])], [(2, f"row: a cell is longer than {MAX_CELL_CHARS} characters")])


def test_cell_exactly_at_the_limit_is_accepted():
    cell = "x" * MAX_CELL_CHARS
    assert read(f"external_id,a\nC1,{cell}\n")[1] == [(2, ["C1", cell])]


def test_cell_over_the_csv_module_field_limit_is_rejected_and_reading_goes_on():
    big = "x" * 200_000
    assert read(f"external_id,a\nC1,{big}\nC2,ok\n")[1:] == (
        [(3, ["C2", "ok"])], [(2, f"row: a cell is longer than {MAX_CELL_CHARS} characters")])


def test_row_get_strips_and_treats_empty_as_absent():
    row = Row(2, ["C1", "  x  ", "   ", ""], {"external_id": "C1", "a": "  x  ", "b": "   ", "c": ""})
    assert (row.get("a"), row.get("b"), row.get("c"), row.get("missing")) == ("x", None, None, None)


# -- the rejects file -----------------------------------------------------------------------------

def test_rejects_file_default_is_stem_in_the_working_directory(in_tmp):
    (in_tmp / "data").mkdir()
    make("external_id,a\nC1,x,extra\nC2,ok\n", "data/contacts.csv")
    with CsvInput("data/contacts.csv", ("external_id",)) as source:
        list(source.rows())
        written = source.write_rejects(None)
    assert written == Path("contacts.rejects.csv")
    assert read_rejects(in_tmp / "contacts.rejects.csv") == [
        ["external_id", "a", "line", "reason"],
        ["C1", "x", "2", "row: has 3 cells but the header has 2"],
    ]
    assert not (in_tmp / "data" / "contacts.rejects.csv").exists()


def test_rejects_are_written_in_file_order_with_original_cells(in_tmp):
    make('external_id,note,city\nC1,"a, b",İstanbul\nC2,x\nC3,"multi\nline",Ankara\n\nC4,y,Bursa\n')
    with CsvInput("in.csv", ("external_id",)) as source:
        rows = list(source.rows())
        # the caller rejects after the reader did: the file still lists them by line
        source.reject(rows[1], "city: made up")
        source.reject(rows[0], "note: made up too")
        assert source.write_rejects("bad.csv") == Path("bad.csv")
        assert source.reason_counts() == {"row": 1, "city": 1, "note": 1}
    assert read_rejects("bad.csv") == [
        ["external_id", "note", "city", "line", "reason"],
        ["C1", "a, b", "İstanbul", "2", "note: made up too"],
        ["C2", "x", "", "3", "row: has 2 cells but the header has 3"],
        ["C3", "multi\nline", "Ankara", "4", "city: made up"],
    ]


def test_rejects_row_with_too_many_cells_keeps_the_header_width():
    make("external_id,a\nC1,x,y,z\n")
    with CsvInput("in.csv", ("external_id",)) as source:
        list(source.rows())
        source.write_rejects("r.csv")
    assert read_rejects("r.csv") == [["external_id", "a", "line", "reason"],
                                     ["C1", "x", "2", "row: has 4 cells but the header has 2"]]


def test_a_row_with_an_oversized_cell_is_listed_without_that_cell():
    make(f"external_id,a\nC1,{'x' * 200_000}\n")
    with CsvInput("in.csv", ("external_id",)) as source:
        list(source.rows())
        source.write_rejects("r.csv")
    assert read_rejects("r.csv") == [["external_id", "a", "line", "reason"],
                                     ["C1", "", "2", f"row: a cell is longer than {MAX_CELL_CHARS} characters"]]


def test_a_long_quoted_cell_over_many_lines_is_one_rejected_row():
    big = "\n".join(["x" * 99] * 2_000)  # 200,000 characters: over the csv module's own default limit
    assert read(f'external_id,a\nC1,ok\nC2,"{big}"\nC3,"fine, quoted"\n')[1:] == (
        [(2, ["C1", "ok"]), (2003, ["C3", "fine, quoted"])],
        [(3, f"row: a cell is longer than {MAX_CELL_CHARS} characters")])


def test_a_cell_past_the_field_limit_stops_the_file():
    error = input_error_rows(f'external_id,a\nC1,ok\nC2,"{"x" * (FIELD_LIMIT + 1)}\nC3,ok\n')
    assert str(error) == (f"in.csv:3: a cell starting on this line is longer than {FIELD_LIMIT} characters (a quote "
                          "never closed?); nothing after it was read, the rows before it were imported")


def input_error_rows(data: str) -> InputError:
    """The error that stopped reading; the rows before it were read."""
    make(data)
    with CsvInput("in.csv", ("external_id",)) as source:
        assert [(r.line, r.cells) for r in source.rows()] == [(2, ["C1", "ok"])]
    assert source.stopped is not None and source.stopped.exit_code == 2
    return source.stopped


def test_no_rejects_writes_no_file(in_tmp):
    make("external_id\nC1\n")
    with CsvInput("in.csv", ("external_id",)) as source:
        assert [r.cells for r in source.rows()] == [["C1"]]
        assert source.write_rejects(None) is None
        assert source.reason_counts() == {}
    assert sorted(p.name for p in in_tmp.iterdir()) == ["in.csv"]


def test_rejects_file_in_a_missing_folder_is_refused_up_front():
    make("external_id\nC1\n")
    with CsvInput("in.csv", ("external_id",)) as source:
        with pytest.raises(InputError) as caught:
            source.check_rejects_target("no/such/dir/r.csv")
        source.check_rejects_target(None)
        source.check_rejects_target("fine.csv")
    assert str(caught.value) == ("no/such/dir/r.csv: --rejects: folder 'no/such/dir' does not exist; "
                                 "create it or choose another rejects file")


def test_rejects_target_that_is_a_folder_is_refused(in_tmp):
    (in_tmp / "out").mkdir()
    make("external_id\nC1\n")
    with CsvInput("in.csv", ("external_id",)) as source:
        with pytest.raises(InputError, match=r"^out: --rejects: is a folder; give a file name for the rejects$"):
            source.check_rejects_target("out")


def test_write_failure_is_an_input_error():
    make("external_id,a\nC1\n")
    with CsvInput("in.csv", ("external_id",)) as source:
        list(source.rows())
        with pytest.raises(InputError) as caught:
            source.write_rejects("missing/r.csv")
    assert str(caught.value) == ("missing/r.csv: --rejects: cannot be written (No such file or directory); "
                                 "the valid rows were imported, 1 rows were rejected")


# -- helpers --------------------------------------------------------------------------------------

def test_batched():
    rows = [Row(i, [], {}) for i in range(2, 9)]
    assert [[r.line for r in b] for b in batched(iter(rows), 3)] == [[2, 3, 4], [5, 6, 7], [8]]
    assert list(batched(iter([]), 3)) == []


def test_position_reaches_the_file_size():
    data = "external_id\n" + "".join(f"C{i}\n" for i in range(100))
    with CsvInput(make(data), ("external_id",)) as source:
        assert len(list(source.rows())) == 100
        assert source.position == source.size == len(data)


def test_close_releases_the_file():
    source = CsvInput(make("external_id\nC1\n"), ("external_id",))
    source.close()
    assert source._file.closed


def test_batched_also_caps_the_characters_of_a_batch():
    rows = [Row(i, ["x" * 40, "y" * 60], {}) for i in range(2, 9)]
    assert [[r.line for r in b] for b in batched(iter(rows), 1_000, max_chars=250)] == [[2, 3, 4], [5, 6, 7], [8]]
