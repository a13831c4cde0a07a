"""Interpolation (CS-INT-*) and the dotenv format (CS-INT-15)."""

from __future__ import annotations

import pytest

from composenet.compose.interpolate import InterpolationError, parse_dotenv, substitute

ENV = {"SET": "v", "EMPTY": "", "FOO": "foo", "PORT": "8080"}


def sub(s: str) -> str:
    return substitute(s, ENV.get)


@pytest.mark.parametrize("text,want", [
    ("$SET", "v"), ("${SET}", "v"), ("a${SET}b", "avb"), ("$SET.x", "v.x"),
    ("${UNSET:-d}", "d"), ("${EMPTY:-d}", "d"), ("${SET:-d}", "v"),
    ("${UNSET-d}", "d"), ("${EMPTY-d}", ""),
    ("${SET:+alt}", "alt"), ("${EMPTY:+alt}", ""), ("${EMPTY+alt}", "alt"), ("${UNSET+alt}", ""),
    ("${UNSET:-${FOO}}", "foo"), ("${UNSET:-${UNSET2:-deep}}", "deep"), ("${UNSET:-$FOO-x}", "foo-x"),
    ("$$SET", "$SET"), ("$${SET}", "${SET}"), ("cost $5", "cost $5"), ("a $ b", "a $ b"), ("end$", "end$"),
    ("${UNSET-:80:80}", ":80:80"),  # CS-INT-12: the first operator wins
    ("${PORT}:80", "8080:80"), ("${lower:-x}", "x"),
])
def test_operators(text: str, want: str):
    assert sub(text) == want


def test_required_variables():
    assert sub("${SET:?boom}") == "v"
    assert sub("${EMPTY?boom}") == ""
    with pytest.raises(InterpolationError, match="UNSET is missing a value: boom"):
        sub("${UNSET?boom}")
    with pytest.raises(InterpolationError, match="EMPTY is missing a value: need FOO=foo"):
        sub("${EMPTY:?need FOO=$FOO}")


@pytest.mark.parametrize("text", ["${SET", "${}", "${SET/a/b}", "${1X}"])
def test_invalid_syntax(text: str):
    with pytest.raises(InterpolationError):
        sub(text)


def test_unset_is_reported_once_per_use():
    seen: list[str] = []
    assert substitute("$A-${B}-${C:-c}", {}.get, seen.append) == "--c"
    assert seen == ["A", "B"]


def test_dotenv_format():
    text = "\n".join([
        "# comment", "", "A=1", "export B=two words # comment", "C='lit $A'", 'D="x\\ny $A"',
        "E=${A}-$B", "F=", "G", 'H="multi', 'line"', "I=a#b",
    ])
    got = dict(parse_dotenv(text, ".env", {"Z": "z"}.get, bare={"G": "from-env"}.get))
    assert got == {"A": "1", "B": "two words", "C": "lit $A", "D": "x\ny 1", "E": "1-two words", "F": "",
                   "G": "from-env", "H": "multi\nline", "I": "a#b"}


def test_dotenv_errors_name_the_line():
    with pytest.raises(ValueError, match="^2: invalid variable name"):
        parse_dotenv("A=1\n1BAD=2\n", ".env", {}.get)
    with pytest.raises(ValueError, match="^1: unterminated"):
        parse_dotenv("A='open\n", ".env", {}.get)
