"""Unit tests of the positioned YAML loader (`load_yaml_text`)."""

from __future__ import annotations

import math
import textwrap
import time

import pytest

from torchkiln.errors import SpecError
from torchkiln.schemas import yaml_source
from torchkiln.schemas.yaml_source import Position, dotted, load_yaml, load_yaml_text

TEXT = textwrap.dedent("""\
    # a comment line
    name: demo
    stages:
      train:
        epochs: 3
        metrics: [accuracy, {name: top_k, k: 3}]
        layers:
          - 32
          - 64
""")


def load(text: str):
    return load_yaml_text(textwrap.dedent(text), "t.yaml")


def issues_of(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load(text)
    return [str(i) for i in info.value.issues]


def test_data_is_plain_python() -> None:
    doc = load_yaml_text(TEXT, "t.yaml")
    assert doc.file == "t.yaml"
    assert doc.data == {
        "name": "demo",
        "stages": {
            "train": {
                "epochs": 3,
                "metrics": ["accuracy", {"name": "top_k", "k": 3}],
                "layers": [32, 64],
            }
        },
    }


def test_positions_of_keys_and_values() -> None:
    doc = load_yaml_text(TEXT, "t.yaml")
    assert doc.keys[("name",)] == Position(2, 1)
    assert doc.values[("name",)] == Position(2, 7)
    assert doc.keys[("stages", "train")] == Position(4, 3)
    assert doc.values[("stages", "train")] == Position(5, 5)  # a block mapping starts at its key
    assert doc.keys[("stages", "train", "epochs")] == Position(5, 5)
    assert doc.values[("stages", "train", "epochs")] == Position(5, 13)
    assert doc.values[("stages", "train", "metrics")] == Position(6, 14)


def test_positions_of_list_items() -> None:
    doc = load_yaml_text(TEXT, "t.yaml")
    assert doc.values[("stages", "train", "metrics", 0)] == Position(6, 15)
    assert doc.values[("stages", "train", "metrics", 1)] == Position(6, 25)
    assert doc.keys[("stages", "train", "metrics", 1, "k")] == Position(6, 39)
    assert doc.values[("stages", "train", "metrics", 1, "k")] == Position(6, 42)
    assert doc.values[("stages", "train", "layers", 0)] == Position(8, 9)
    assert doc.values[("stages", "train", "layers", 1)] == Position(9, 9)


def test_position_of_missing_paths_falls_back_to_the_nearest_parent() -> None:
    doc = load_yaml_text(TEXT, "t.yaml")
    # a missing key of a mapping: the mapping's key
    assert doc.position(("stages", "train", "batch_size")) == Position(4, 3)
    # a field of a list item that is a plain string (shorthand): the item itself
    assert doc.position(("stages", "train", "metrics", 0, "name")) == Position(6, 15)
    # a field of a scalar mapping value (shorthand): the value, where the word is written
    assert doc.position(("name", "first")) == Position(2, 7)
    # key=True prefers the key when both exist
    assert doc.position(("stages", "train", "epochs"), key=True) == Position(5, 5)
    assert doc.position(("stages", "train", "epochs")) == Position(5, 13)
    # nothing at all: where the document starts (after the comment)
    assert doc.position(("nope", "deeper")) == doc.values[()] == Position(2, 1)


def test_position_under_an_empty_value_is_its_key() -> None:
    doc = load("stages:\n  train:\n  evaluate: {}\n")
    assert doc.data == {"stages": {"train": None, "evaluate": {}}}
    assert doc.position(("stages", "train", "epochs")) == Position(2, 3)
    assert doc.position(("stages", "evaluate", "metrics")) == Position(3, 3)


def test_issue_formats_file_line_col_and_dotted_path() -> None:
    doc = load_yaml_text(TEXT, "t.yaml")
    issue = doc.issue(("stages", "train", "layers", 1), "too wide")
    assert str(issue) == "t.yaml:9:9: stages.train.layers[1]: too wide"
    assert dotted(("a", 0, "b", 2)) == "a[0].b[2]"
    assert dotted(()) == ""


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1e-3", 0.001),  # YAML 1.1 (yaml.safe_load) reads this as a string
        ("3.0e-3", 0.003),
        ("-2.5", -2.5),
        (".5", 0.5),
        ("1_000", "1_000"),  # the core schema has no digit separators (ruamel would say 1000)
        ("010", 10),  # YAML 1.2: decimal, not octal
        ("0o17", 15),
        ("0x1F", 31),
        ("-7", -7),
        ("yes", "yes"),  # YAML 1.1 would make these booleans
        ("no", "no"),
        ("on", "on"),
        ("off", "off"),
        ("y", "y"),
        ("true", True),
        ("False", False),
        ("TRUE", True),
        ("null", None),
        ("~", None),
        ("", None),
        ("'010'", "010"),
        ('"1e-3"', "1e-3"),
        ("1.0.0", "1.0.0"),
        ("12:30", "12:30"),  # YAML 1.1 sexagesimal int
        ("2024-01-01", "2024-01-01"),  # no timestamps: stays a string
        ("0b101", "0b101"),  # nor binary
    ],
)
def test_yaml_1_2_core_scalars(text: str, value: object) -> None:
    got = load_yaml_text(f"v: {text}\n", "t.yaml").data["v"]
    assert got == value
    assert type(got) is type(value)


@pytest.mark.parametrize(
    ("text", "check"),
    [
        (".inf", lambda v: v == math.inf),
        ("-.Inf", lambda v: v == -math.inf),
        ("+.INF", lambda v: v == math.inf),
        (".nan", math.isnan),
        (".NaN", math.isnan),
    ],
)
def test_special_floats(text: str, check) -> None:
    value = load_yaml_text(f"v: {text}\n", "t.yaml").data["v"]
    assert isinstance(value, float)
    assert check(value)


def test_merge_keys_explicit_keys_win() -> None:
    doc = load(
        """\
        base: &base {lr: 0.1, momentum: 0.9}
        other: &other {lr: 0.5, nesterov: true, momentum: 0.5}
        opt:
          <<: [*base, *other]
          lr: 0.01
        """
    )
    # explicit keys win over merged ones; earlier merge sources win over later ones
    assert doc.data["opt"] == {"lr": 0.01, "momentum": 0.9, "nesterov": True}
    assert doc.keys[("opt", "lr")].line == 5
    assert doc.keys[("opt", "momentum")].line == 1  # merged keys point at their source
    assert doc.keys[("opt", "nesterov")].line == 2


def test_merge_key_single_mapping() -> None:
    doc = load(
        """\
        defaults: &d {epochs: 3, batch_size: 8}
        train:
          <<: *d
          epochs: 5
        """
    )
    assert doc.data["train"] == {"epochs": 5, "batch_size": 8}


def test_merge_of_a_scalar_is_an_error() -> None:
    assert issues_of("a:\n  <<: 3\n") == [
        "t.yaml:2:7: a merge key '<<' needs a mapping or a list of mappings"
    ]


def test_aliases_share_values_and_positions() -> None:
    doc = load(
        """\
        common: &c {name: AdamW, lr: 0.001}
        first: *c
        second: *c
        """
    )
    assert doc.data["first"] == doc.data["second"] == {"name": "AdamW", "lr": 0.001}
    assert doc.data["first"] is not doc.data["second"]  # built separately: no shared mutation
    assert doc.values[("second", "lr")] == Position(1, 30)  # where the value is written


def test_duplicate_keys_are_reported_with_both_lines() -> None:
    issues = issues_of(
        """\
        a: 1
        b:
          c: 1
          c: 2
        a: 3
        """
    )
    assert issues == [
        "t.yaml:4:3: duplicate key 'c' (first defined at line 3); YAML would silently keep "
        "only the last one",
        "t.yaml:5:1: duplicate key 'a' (first defined at line 1); YAML would silently keep "
        "only the last one",
    ]


def test_duplicate_keys_differ_by_type_not_spelling() -> None:
    # `1` and `"1"` are different keys; `010` and `10` are the same integer
    assert load_yaml_text("1: a\n'1': b\n", "t.yaml").data == {1: "a", "1": "b"}
    assert issues_of("010: a\n10: b\n") == [
        "t.yaml:2:1: duplicate key 10 (first defined at line 1); YAML would silently keep "
        "only the last one"
    ]


def test_non_scalar_keys_are_refused() -> None:
    assert issues_of("? [a, b]\n: 1\n") == ["t.yaml:1:3: mapping keys must be plain scalars"]


@pytest.mark.parametrize(
    "text",
    [
        "v: !!python/object/apply:os.system ['true']\n",
        "v: !!python/name:os.system\n",
        "v: !!binary aGVsbG8=\n",
        "v: !!timestamp 2024-01-01\n",
        "v: !!set {a, b}\n",
        "v: !custom 3\n",
        "v: !custom [1]\n",
        "v: !custom {a: 1}\n",
    ],
)
def test_tags_outside_the_core_schema_are_refused(text: str) -> None:
    (issue,) = issues_of(text)
    assert issue.startswith("t.yaml:1:4: tag ")
    assert "is not allowed; only plain YAML values are" in issue


def test_explicit_core_tags_are_fine() -> None:
    data = load_yaml_text("a: !!str 010\nb: !!int '7'\nc: !!float '1'\n", "t.yaml").data
    assert data == {"a": "010", "b": 7, "c": 1.0}


def test_an_explicit_tag_that_does_not_fit_is_an_error() -> None:
    assert issues_of("a: !!int seven\n") == ["t.yaml:1:4: 'seven' is not a valid int"]


def test_node_limit_refuses_alias_bombs_quickly() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    started = time.process_time()  # CPU time: a shared, loaded machine does not inflate it
    with pytest.raises(SpecError) as info:
        load_yaml_text("\n".join(lines), "t.yaml")
    assert time.process_time() - started < 2
    (issue,) = info.value.issues
    assert "expands to more than 100000 values through aliases" in issue.message


def test_node_limit_counts_expanded_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yaml_source, "MAX_NODES", 20)
    text = "a: &a [1, 2, 3, 4, 5]\nb: [*a, *a]\n"  # 1 + 1+5 + 1+2*6 = 20 values
    assert load_yaml_text(text, "t.yaml").data["b"] == [[1, 2, 3, 4, 5]] * 2
    with pytest.raises(SpecError, match="more than 20 values"):
        load_yaml_text(text + "c: 1\n", "t.yaml")


def test_depth_limit() -> None:
    ok = "v: " + "[" * 99 + "]" * 99 + "\n"
    assert load_yaml_text(ok, "t.yaml").data["v"] is not None
    assert issues_of("v: " + "[" * 101 + "]" * 101 + "\n") == [
        "t.yaml:1:104: the document nests deeper than 100 levels"
    ]


@pytest.mark.parametrize("depth", [400, 20_000])
def test_depth_limit_before_python_recursion(depth: int) -> None:
    # past Python's recursion limit for PyYAML's recursive composer: refused at the same
    # place, with the same message, not at 1:1 after a RecursionError
    assert issues_of("v: " + "[" * depth + "]" * depth + "\n") == [
        "t.yaml:1:104: the document nests deeper than 100 levels"
    ]


def test_depth_limit_in_block_style() -> None:
    block = "".join(f"{' ' * i}k{i}:\n" for i in range(150))
    (issue,) = issues_of(block + " " * 150 + "leaf: 1\n")
    assert issue == "t.yaml:102:102: the document nests deeper than 100 levels"  # k101


def test_depth_limit_through_aliases() -> None:
    # aliases can nest an anchored node deeper than it was written: the builder counts
    deep = "[" * 60 + "]" * 60
    text = f"a: &a {deep}\nb: {'[' * 45}*a, *a{']' * 45}\n"
    (issue,) = issues_of(text)
    assert issue.endswith("the document nests deeper than 100 levels")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "t.yaml:1:1: the spec is empty; expected a mapping with 'stages'"),
        ("# just a comment\n", "t.yaml:1:1: the spec is empty; expected a mapping with 'stages'"),
        ("- a\n", "t.yaml:1:1: the top level must be a mapping with 'stages' (got a list)"),
        ("hello\n", "t.yaml:1:1: the top level must be a mapping with 'stages' (got a str)"),
        ("3\n", "t.yaml:1:1: the top level must be a mapping with 'stages' (got an int)"),
        (
            "a: 1\n---\nb: 2\n",
            "t.yaml:2:1: invalid YAML: the file holds more than one YAML document; "
            "a spec is a single document",
        ),
        (
            "a:\n\tb: 1\n",
            "t.yaml:2:1: invalid YAML: a tab character here; YAML indents with spaces only",
        ),
        ("a: [1, 2\n", "t.yaml:2:1: invalid YAML: expected ',' or ']', but got '<stream end>'"),
        ("a: 'x\n", "t.yaml:2:1: invalid YAML: found unexpected end of stream"),
        ("a: *nope\n", "t.yaml:1:4: invalid YAML: found undefined alias 'nope'"),
    ],
)
def test_structural_errors(text: str, expected: str) -> None:
    (issue,) = issues_of(text)
    assert issue.startswith(expected), issue


def test_tabs_in_values() -> None:
    assert load_yaml_text('a: "x\\ty"\n', "t.yaml").data == {"a": "x\ty"}
    # PyYAML refuses a tab inside a plain scalar; the position is the tab's
    (issue,) = issues_of("a: 1\nb: x\ty\n")
    assert issue.startswith("t.yaml:2:5: invalid YAML: a tab character here")


def test_files_invalid_utf8_bom_and_size(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert load_yaml(bom, "bom.yaml").data == {"a": 1}

    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"a: 1\nb: caf\xe9\n")
    with pytest.raises(SpecError) as info:
        load_yaml(latin, "latin.yaml")
    assert [str(i) for i in info.value.issues] == [
        "latin.yaml:2:7: the file is not valid UTF-8 (byte 0xe9)"
    ]


def test_size_limit_refuses_a_big_file_unread(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("a: 1\n" + "#" * yaml_source.MAX_BYTES)
    with pytest.raises(SpecError) as info:
        load_yaml(big, "pipelines/big.yaml")
    size = big.stat().st_size
    assert [str(i) for i in info.value.issues] == [
        f"pipelines/big.yaml:1:1: the file is {size:,} bytes, more than the 4,194,304 a spec "
        "may have"
    ]
    assert info.value.exit_code == 2
    monkeypatch.setattr(yaml_source, "MAX_BYTES", 10)
    small = tmp_path / "small.yaml"
    small.write_text("a: 1234\n")  # 8 bytes: under the limit
    assert load_yaml(small).data == {"a": 1234}
    with pytest.raises(SpecError, match="11 bytes, more than the 10 a spec may have"):
        small.write_text("a: 1234567\n")
        load_yaml(small)
