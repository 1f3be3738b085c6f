"""Where ``o11ylab serve`` takes its key from, and that no form of it is ever echoed."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from o11ylab.serve import API_KEY_ENV, add_arguments, api_key_from

KEY = "sk-serve-SECRET-4242"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_a_key_file_gives_its_first_line(tmp_path: Path) -> None:
    key_file = tmp_path / "serve.key"
    key_file.write_text(f"  {KEY}  \nignored second line\n")
    assert api_key_from(parse("--api-key-file", str(key_file))) == KEY


def test_the_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, KEY)
    assert api_key_from(parse()) == KEY
    monkeypatch.delenv(API_KEY_ENV)
    assert api_key_from(parse()) is None


def test_a_key_on_the_command_line_works_and_warns(capsys: pytest.CaptureFixture[str]) -> None:
    assert api_key_from(parse("--api-key", KEY)) == KEY
    err = capsys.readouterr().err
    assert "--api-key-file" in err and API_KEY_ENV in err and KEY not in err


@pytest.mark.parametrize("content", [None, "", "\n\n"])
def test_a_missing_or_empty_key_file_says_what_to_do(tmp_path: Path, content: str | None) -> None:
    key_file = tmp_path / "serve.key"
    if content is not None:
        key_file.write_text(content)
    with pytest.raises(SystemExit) as refused:
        api_key_from(parse("--api-key-file", str(key_file)))
    message = str(refused.value)
    assert str(key_file) in message and "first line" in message
