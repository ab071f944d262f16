"""The decision log can neither hang nor tear (issue 7, part 5)."""

import json
import os
import stat
import subprocess
import threading
import time

import pytest

from authz.audit import LogSink, LogUnavailable


def test_a_sink_that_stops_reading_is_a_deny_within_the_bound():
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        while True:
            os.write(w, b"x" * 65536)
    except BlockingIOError:
        pass
    os.set_blocking(w, True)
    sink = LogSink(None, timeout=0.3, fd=w)
    results = []

    def decide():
        started = time.monotonic()
        try:
            sink.write(b'{"d":1}\n')
            results.append("written")
        except LogUnavailable:
            results.append(time.monotonic() - started)

    threads = [threading.Thread(target=decide) for _ in range(8)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    # Every decision answered (as a deny) within about the bound, in parallel, none hung.
    assert len(results) == 8 and all(isinstance(x, float) and x < 1.0 for x in results)
    assert time.monotonic() - started < 2.0
    os.close(r)


def test_a_full_device_is_a_deny():
    fd = os.open("/dev/full", os.O_WRONLY)
    sink = LogSink(None, timeout=1.0, fd=fd)
    with pytest.raises(LogUnavailable) as info:
        sink.write(b'{"d":1}\n')
    assert "No space" in str(info.value)


def test_rotation_is_followed_and_the_file_is_private(tmp_path):
    path = tmp_path / "log" / "decisions.jsonl"
    sink = LogSink(path, timeout=1.0)
    sink.write(b'{"n":1}\n')
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    os.rename(path, tmp_path / "log" / "decisions.jsonl.1")   # logrotate, create mode
    sink.write(b'{"n":2}\n')
    assert (tmp_path / "log" / "decisions.jsonl.1").read_bytes() == b'{"n":1}\n'
    assert path.read_bytes() == b'{"n":2}\n'
    path.unlink()                                              # removed by hand
    sink.write(b'{"n":3}\n')
    assert path.read_bytes() == b'{"n":3}\n'


def test_an_existing_world_readable_log_is_made_private(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"")
    os.chmod(path, 0o644)
    LogSink(path, timeout=1.0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs")
def test_a_full_disk_never_tears_a_line(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        sink = LogSink(mnt / "d.jsonl", timeout=1.0)
        line = json.dumps({"pad": "x" * 700}).encode() + b"\n"
        written = 0
        for _ in range(100):
            try:
                sink.write(line)
                written += 1
            except LogUnavailable:
                break
        else:
            pytest.fail("the small disk never filled")
        data = (mnt / "d.jsonl").read_bytes()
        assert data.endswith(b"\n") and data.count(b"\n") == written
        assert all(json.loads(x) for x in data.splitlines())
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_line_written_after_its_decision_timed_out_is_voided():
    """The writer was already writing the line when the decision gave up (and answered
    deny): a decision-void line for the same id follows it once the sink drains."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    filled = 0
    try:
        while True:
            filled += os.write(w, b"x" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(w, True)
    sink = LogSink(None, timeout=0.3, fd=w)
    with pytest.raises(LogUnavailable):
        sink.write(json.dumps({"decision_id": "abc", "allow": True}).encode() + b"\n")
    drained = b""
    os.set_blocking(r, False)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and b"decision-void" not in drained:
        try:
            drained += os.read(r, 1 << 20)
        except BlockingIOError:
            time.sleep(0.05)
    lines = [json.loads(x) for x in drained[filled:].splitlines() if x.strip()]
    assert lines[0] == {"decision_id": "abc", "allow": True}
    assert lines[1]["event"] == "decision-void" and lines[1]["decision_id"] == "abc"
    assert lines[1]["allow"] is False


def test_local_files_are_written_directly_and_a_fifo_is_handed_off(tmp_path):
    """A line to a local file costs a few microseconds (no thread hand-off); a sink that may
    block (a FIFO put at the path, with a reader that stops reading) goes to the writer
    thread, whose wait is bounded."""
    path = tmp_path / "d.jsonl"
    sink = LogSink(path, timeout=0.3)
    assert sink._direct
    started = time.perf_counter()
    for _ in range(1000):
        sink.write(b'{"n":1}\n')
    assert (time.perf_counter() - started) / 1000 < 0.001
    os.rename(path, tmp_path / "old")
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a reader that never reads
    try:
        with pytest.raises(LogUnavailable):
            for _ in range(100):  # fills the pipe, then the bound applies
                sink.write(b'{"n":2}' + b" " * 4000 + b"\n")
        assert not sink._direct
    finally:
        os.close(reader)


def test_every_rendered_line_is_json_whatever_the_values():
    """orjson renders the line; what it refuses (a lone surrogate, an integer beyond 64 bits)
    falls back to the standard library, and neither writes a bare NaN."""
    import json as json_module
    import math

    from authz.audit import _serialize

    for event in ({"a": "\udc80", "b": float("nan")}, {"c": [float("inf"), 1.5], "d": 10**30},
                  {"e": float("-inf")}, {"f": b"bytes", "g": object()}):
        line = _serialize(event)
        parsed = json_module.loads(line)
        assert all(not (isinstance(v, float) and not math.isfinite(v)) for v in parsed.values())
        assert b"NaN" not in line and b"Infinity" not in line
