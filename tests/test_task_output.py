"""TaskOutputStream (stream_output, processor side): when it sends, and in what pieces."""

import threading

import pytest

from scaler.protocol.messages import TaskOutput
from scaler.worker.task_output import STDERR, TaskOutputStream


def _stream(sent, stream=1):
    return TaskOutputStream(b"t" * 16, stream, sent.append)


def test_a_complete_line_is_sent_at_once_a_partial_one_waits_for_flush():
    sent = []
    out = _stream(sent)
    out.write("partial")
    assert sent == []
    out.write(" line\nand more")
    assert [bytes(m.data) for m in sent] == [b"partial line\nand more"]
    out.write(" tail")
    out.flush()
    assert bytes(sent[-1].data) == b" tail" and all(type(m) is TaskOutput for m in sent)


def test_a_long_line_is_sent_before_its_newline_and_in_bounded_pieces():
    sent = []
    out = _stream(sent, STDERR)
    out.write("y" * 9000)
    assert sum(len(m.data) for m in sent) == 9000  # 8 KiB buffered: sent without a newline
    sent.clear()
    out.write("z" * 200_000 + "\n")
    assert [len(m.data) for m in sent] == [65536, 65536, 65536, 200_001 - 3 * 65536]
    assert {m.stream for m in sent} == {STDERR}


def test_text_only_and_non_ascii_survives():
    sent = []
    out = _stream(sent)
    with pytest.raises(TypeError):
        out.write(b"bytes")  # type: ignore[arg-type]
    out.write("héllo ✓\n")
    assert bytes(sent[0].data).decode("utf-8") == "héllo ✓\n"
    assert out.encoding == "utf-8" and not out.isatty() and out.writable()


def test_threads_writing_at_once_never_split_a_write():
    sent = []
    out = _stream(sent)
    lines = ["thread %d line %d\n" % (t, i) for t in range(4) for i in range(200)]

    def writer(t):
        for i in range(200):
            out.write("thread %d line %d\n" % (t, i))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    text = b"".join(bytes(m.data) for m in sent).decode()
    assert sorted(text.splitlines(keepends=True)) == sorted(lines)
