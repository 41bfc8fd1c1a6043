"""The API token file: what is accepted, what is refused (one line, exit 2), and rotation.

Symbolic links are followed and the file they lead to is checked (owner, mode, content): that is
how ``/run/secrets``- and Kubernetes-style deployments put a token file in place.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest_mock import MockerFixture
from structlog.testing import capture_logs

from gateway import tokens
from gateway.cli import main
from gateway.errors import ConfigError
from gateway.tokens import TOKEN_MAX_LENGTH, TOKEN_MIN_LENGTH, TokenSource, read_token_file
from tests.gateway.token_files import TEST_TOKEN, write_token_file

OTHER_TOKEN = "another-token-9876543210-ZYXWVUTSRQPONMLK"
#: An address nothing answers on: a client command that got past reading its token would exit 1.
NO_DAEMON = "127.0.0.1:1"


def refusal(path: Path) -> str:
    """The one-line message of read_token_file's refusal of ``path``."""
    with pytest.raises(ConfigError) as caught:
        read_token_file(path)
    message = str(caught.value)
    assert "\n" not in message
    assert repr(str(path)) in message
    return message


def write_bytes_0600(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


def replace_with(path: Path, token: str) -> None:
    """Rotate as an operator would: write a new file beside it and rename it over (new inode)."""
    os.replace(write_token_file(path.with_name(path.name + ".new"), token), path)


# --- accepted -------------------------------------------------------------------------------


def test_the_written_token_is_read_back_without_its_newline(tmp_path: Path) -> None:
    assert read_token_file(write_token_file(tmp_path / "token")) == TEST_TOKEN


def test_a_token_without_a_trailing_newline_is_accepted(tmp_path: Path) -> None:
    path = write_bytes_0600(tmp_path / "token", TEST_TOKEN.encode())
    assert read_token_file(path) == TEST_TOKEN


def test_mode_0400_is_accepted(tmp_path: Path) -> None:
    path = write_token_file(tmp_path / "token")
    path.chmod(0o400)
    assert read_token_file(path) == TEST_TOKEN


def test_32_and_256_characters_are_the_bounds(tmp_path: Path) -> None:
    assert TOKEN_MIN_LENGTH == 32
    for length in (TOKEN_MIN_LENGTH, TOKEN_MAX_LENGTH):
        token = "x" * length
        assert read_token_file(write_token_file(tmp_path / "token", token)) == token


def test_a_symlink_to_a_0600_file_of_ours_is_followed(tmp_path: Path) -> None:
    target = write_token_file(tmp_path / "secret")
    link = tmp_path / "token"
    link.symlink_to(target)
    assert read_token_file(link) == TEST_TOKEN
    assert TokenSource(link).current() == TEST_TOKEN


# --- refused: what the file is --------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o666, 0o640, 0o604, 0o660, 0o620, 0o602, 0o610])
@pytest.mark.hazard("H-AU-01")
def test_group_or_other_access_is_refused_with_the_chmod_line(tmp_path: Path, mode: int) -> None:
    path = write_token_file(tmp_path / "token")
    path.chmod(mode)
    message = refusal(path)
    assert f"(mode {mode:04o})" in message
    assert message.endswith(f"run chmod 600 {path}")
    assert "by group or others" in message


def test_the_chmod_line_quotes_a_path_with_a_space(tmp_path: Path) -> None:
    path = write_token_file(tmp_path / "my token")
    path.chmod(0o644)
    assert refusal(path).endswith(f"run chmod 600 '{path}'")


@pytest.mark.hazard("H-AU-01")
def test_a_symlink_to_a_group_readable_file_is_refused(tmp_path: Path) -> None:
    target = write_token_file(tmp_path / "secret")
    target.chmod(0o644)
    link = tmp_path / "token"
    link.symlink_to(target)
    assert "run chmod 600" in refusal(link)


@pytest.mark.timeout(5)
def test_a_fifo_is_refused_at_once_without_being_opened(
    tmp_path: Path, mocker: MockerFixture
) -> None:
    fifo = tmp_path / "token"
    os.mkfifo(fifo, 0o600)
    opens = mocker.spy(os, "open")
    assert "FIFO" in refusal(fifo)
    assert opens.call_count == 0
    with pytest.raises(ConfigError, match="FIFO"):
        TokenSource(fifo)


@pytest.mark.timeout(5)
def test_a_fifo_swapped_in_after_the_check_is_refused_without_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race: the path is a good file when checked, a FIFO when opened. The open must not
    # block (O_NONBLOCK) and what was opened is checked again (fstat).
    good = write_token_file(tmp_path / "good")
    fifo = tmp_path / "token"
    os.mkfifo(fifo, 0o600)
    monkeypatch.setattr(tokens, "_stat", lambda path: os.stat(good))
    assert "FIFO" in refusal(fifo)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "token"
    directory.mkdir(mode=0o700)
    assert "is a directory" in refusal(directory)


def test_a_missing_file_is_refused_saying_how_to_make_one(tmp_path: Path) -> None:
    assert "infusion-gateway token new" in refusal(tmp_path / "missing")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
@pytest.mark.hazard("H-AU-01")
def test_a_file_owned_by_another_user_is_refused_with_the_chown_line(tmp_path: Path) -> None:
    path = write_token_file(tmp_path / "token")
    os.chown(path, 65534, -1)
    message = refusal(path)
    assert "not by the user reading it" in message
    assert f"run chown root {path}" in message


# --- refused: what the file holds -----------------------------------------------------------

BAD_CONTENTS = {
    "empty": b"",
    "only_a_newline": b"\n",
    "byte_order_mark": b"\xef\xbb\xbf" + TEST_TOKEN.encode() + b"\n",
    "second_line": TEST_TOKEN.encode() + b"\nsecond-line\n",
    "blank_second_line": TEST_TOKEN.encode() + b"\n\n",
    "windows_line_end": TEST_TOKEN.encode() + b"\r\n",
    "nul": TEST_TOKEN.encode() + b"\x00\n",
    "space_inside": TEST_TOKEN[:20].encode() + b" " + TEST_TOKEN[20:].encode() + b"\n",
    "trailing_space": TEST_TOKEN.encode() + b" \n",
    "leading_tab": b"\t" + TEST_TOKEN.encode() + b"\n",
    "non_utf8": b"\xff\xfe" * 20 + b"\n",
    "non_ascii": ("é" * 40 + "\n").encode(),
    "control_character": TEST_TOKEN.encode() + b"\x1b\n",
    "delete_character": TEST_TOKEN.encode() + b"\x7f\n",
    "too_short": b"x" * (TOKEN_MIN_LENGTH - 1) + b"\n",
    "too_long": b"x" * (TOKEN_MAX_LENGTH + 1) + b"\n",
    "huge": b"x" * 1_000_000,
}


@pytest.mark.parametrize("content", BAD_CONTENTS.values(), ids=BAD_CONTENTS.keys())
def test_bad_content_is_refused_in_one_line_saying_what_is_allowed(
    tmp_path: Path, content: bytes
) -> None:
    path = write_bytes_0600(tmp_path / "token", content)
    message = refusal(path)
    assert "printable ASCII" in message
    assert f"{TOKEN_MIN_LENGTH}-{TOKEN_MAX_LENGTH}" in message


@pytest.mark.parametrize("content", BAD_CONTENTS.values(), ids=BAD_CONTENTS.keys())
def test_a_refusal_never_shows_the_content(tmp_path: Path, content: bytes) -> None:
    path = write_bytes_0600(tmp_path / "token", content)
    message = refusal(path)
    for secret in (TEST_TOKEN, TEST_TOKEN[:20], TEST_TOKEN[20:], "é", "xxxxxxxx", "second-line"):
        assert secret not in message


def test_a_non_ascii_token_is_refused_at_start(tmp_path: Path) -> None:
    path = write_token_file(tmp_path / "token", "é" * 40)
    with pytest.raises(ConfigError, match="outside printable ASCII"):
        TokenSource(path)


def test_a_too_short_token_is_refused_at_start(tmp_path: Path) -> None:
    path = write_token_file(tmp_path / "token", "x" * 31)
    with pytest.raises(ConfigError, match=r"too short \(31 characters\)"):
        TokenSource(path)


@pytest.mark.parametrize("name", ["non_utf8", "non_ascii", "nul", "byte_order_mark"])
def test_the_cli_refuses_a_bad_token_file_with_exit_2_and_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    path = write_bytes_0600(tmp_path / "token", BAD_CONTENTS[name])
    assert main(["status", "--api", NO_DAEMON, "--token-file", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith(f"error: token_file {str(path)!r}: ")
    assert "Traceback" not in captured.err


@pytest.mark.timeout(5)
def test_the_cli_refuses_a_fifo_token_file_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "token"
    os.mkfifo(fifo, 0o600)
    assert main(["status", "--api", NO_DAEMON, "--token-file", str(fifo)]) == 2
    assert "FIFO" in capsys.readouterr().err


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=300)
@given(
    content=st.one_of(
        st.binary(max_size=600),
        st.builds(
            lambda text, newline: (text + newline).encode(),
            st.text(max_size=300),
            st.sampled_from(["", "\n", "\r\n", "\n\n", " "]),
        ),
        st.builds(
            lambda text, newline: (text + newline).encode(),
            st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7F), max_size=300),
            st.sampled_from(["", "\n", "\n\n", " "]),
        ),
    )
)
def test_any_bytes_give_a_printable_ascii_token_or_a_config_error(
    tmp_path: Path, content: bytes
) -> None:
    path = write_bytes_0600(tmp_path / "token", content)
    try:
        token = read_token_file(path)
    except ConfigError as exc:
        refusal_text = str(exc)
    else:
        assert TOKEN_MIN_LENGTH <= len(token) <= TOKEN_MAX_LENGTH
        assert all(0x21 <= ord(c) <= 0x7E for c in token)
        assert content in (token.encode(), token.encode() + b"\n")
        return
    assert "\n" not in refusal_text


# --- infusion-gateway token new ---------------------------------------------------------------


def test_token_new_writes_a_usable_0600_file_and_never_prints_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "token"
    assert main(["token", "new", str(path)]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = read_token_file(path)
    assert len(token) == 43
    assert path.read_bytes() == token.encode() + b"\n"
    out = capsys.readouterr().out
    (line,) = out.splitlines()
    assert str(path) in line
    assert "no restart" in line
    assert token not in out
    assert sorted(os.listdir(tmp_path)) == ["token"]  # no temporary file left behind


def test_token_new_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        assert main(["token", "new", str(tmp_path / "token")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "token").stat().st_mode) == 0o600


def test_token_new_makes_a_different_token_each_time(tmp_path: Path) -> None:
    assert main(["token", "new", str(tmp_path / "a")]) == 0
    assert main(["token", "new", str(tmp_path / "b")]) == 0
    assert read_token_file(tmp_path / "a") != read_token_file(tmp_path / "b")


def test_token_new_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_token_file(tmp_path / "token")
    assert main(["token", "new", str(path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "already exists" in line
    assert "--force" in line
    assert read_token_file(path) == TEST_TOKEN
    assert sorted(os.listdir(tmp_path)) == ["token"]


def test_token_new_force_replaces_and_a_running_source_picks_it_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_token_file(tmp_path / "token")
    source = TokenSource(path)
    assert source.matches(TEST_TOKEN)
    old_inode = path.stat().st_ino
    assert main(["token", "new", str(path), "--force"]) == 0
    assert path.stat().st_ino != old_inode  # replaced by rename, never rewritten in place
    new = read_token_file(path)
    assert new != TEST_TOKEN
    assert source.current() == new
    assert source.matches(new)
    assert not source.matches(TEST_TOKEN)
    assert new not in capsys.readouterr().out


def test_token_new_refuses_a_directory_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "new", str(tmp_path / "nowhere" / "token")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "does not exist" in line


def test_token_new_refuses_a_directory_even_with_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "new", str(tmp_path), "--force"]) == 2
    assert "is a directory" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_token_new_refuses_to_replace_another_users_token_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Root replacing the gateway user's file would leave one the gateway refuses.
    path = write_token_file(tmp_path / "token")
    os.chown(path, 65534, -1)
    assert main(["token", "new", str(path), "--force"]) == 2
    assert "sudo -u" in capsys.readouterr().err
    assert path.stat().st_uid == 65534


def test_token_new_without_an_action_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["token"]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1


# --- TokenSource ------------------------------------------------------------------------------


def test_token_source_refuses_an_unusable_file_at_start(tmp_path: Path) -> None:
    path = write_token_file(tmp_path / "token")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="run chmod 600"):
        TokenSource(path)
    with pytest.raises(ConfigError, match="does not exist"):
        TokenSource(tmp_path / "missing")


@pytest.mark.hazard("H-AU-01")
def test_token_source_fails_closed_on_an_invalid_replacement_and_recovers(
    tmp_path: Path,
) -> None:
    path = write_token_file(tmp_path / "token")
    source = TokenSource(path)
    with capture_logs() as logs:
        replace_with(path, "too-short")
        assert source.current() is None
        assert not source.matches(TEST_TOKEN)
        assert not source.matches("too-short")
        assert source.current() is None  # the same bad file: not re-read, not logged again
        replace_with(path, OTHER_TOKEN)
        assert source.current() == OTHER_TOKEN
        assert source.matches(OTHER_TOKEN)
    invalid = [e for e in logs if e["event"] == "token_file_invalid"]
    assert len(invalid) == 1
    assert invalid[0]["log_level"] == "error"
    assert "too short" in invalid[0]["reason"]
    assert [e["recovered"] for e in logs if e["event"] == "token_file_loaded"] == [True]
    logged = repr(logs)
    for secret in ("too-short", TEST_TOKEN, OTHER_TOKEN):
        assert secret not in logged


@pytest.mark.hazard("H-AU-01")
def test_token_source_fails_closed_when_the_file_goes_away_and_recovers(tmp_path: Path) -> None:
    path = write_token_file(tmp_path / "token")
    source = TokenSource(path)
    with capture_logs() as logs:
        path.unlink()
        assert source.current() is None
        assert source.current() is None
        write_token_file(path, OTHER_TOKEN)
        assert source.current() == OTHER_TOKEN
    assert [e["event"] for e in logs] == ["token_file_invalid", "token_file_loaded"]
    assert "does not exist" in logs[0]["reason"]


@pytest.mark.hazard("H-AU-01")
def test_token_source_fails_closed_when_the_file_is_opened_to_others(tmp_path: Path) -> None:
    path = write_token_file(tmp_path / "token")
    source = TokenSource(path)
    with capture_logs():
        path.chmod(0o644)
        assert source.current() is None
        path.chmod(0o600)
        assert source.current() == TEST_TOKEN


def test_token_source_rereads_a_file_rewritten_in_place_with_a_new_mtime(tmp_path: Path) -> None:
    path = write_token_file(tmp_path / "token")
    source = TokenSource(path)
    before = path.stat()
    write_token_file(path, OTHER_TOKEN[: len(TEST_TOKEN)])  # same inode, same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert source.current() == OTHER_TOKEN[: len(TEST_TOKEN)]


def test_token_source_costs_one_stat_per_call_while_the_file_is_unchanged(
    tmp_path: Path, mocker: MockerFixture
) -> None:
    source = TokenSource(write_token_file(tmp_path / "token"))
    stats = mocker.spy(os, "stat")
    opens = mocker.spy(os, "open")
    for _ in range(5):
        assert source.matches(TEST_TOKEN)
    assert stats.call_count == 5
    assert opens.call_count == 0


@pytest.mark.parametrize(
    "given",
    ["", "é" * 40, TEST_TOKEN[:-1], TEST_TOKEN + "x", TEST_TOKEN.upper(), " " + TEST_TOKEN, "\x00"],
)
@pytest.mark.hazard("H-AU-01")
def test_matches_is_false_for_anything_but_the_token_and_never_raises(
    tmp_path: Path, given: str
) -> None:
    source = TokenSource(write_token_file(tmp_path / "token"))
    assert not source.matches(given)
    assert source.matches(TEST_TOKEN)
