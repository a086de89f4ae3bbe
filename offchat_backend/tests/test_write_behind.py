import multiprocessing
import threading

import pytest

from offchat_backend.write_behind import WriteBehind


def later(earlier, entry):
    return max(earlier, entry)


@pytest.fixture
def written():
    return []


@pytest.fixture
def buffer(written):
    buffer = WriteBehind(name="test", write=written.append, merge=later)
    yield buffer
    buffer.close()


def test_entries_under_one_key_merge_and_a_flush_writes_them_together(buffer, written):
    assert buffer.add("a", 1, interval=60) and buffer.add("b", 5, interval=60) and buffer.add("a", 3, interval=60)

    assert buffer.pending() == 2
    assert buffer.flush() == 2
    assert written == [[3, 5]]
    assert buffer.flush() == 0 and written == [[3, 5]]  # nothing pending: no write


def test_the_thread_writes_by_itself_after_the_interval():
    wrote = threading.Event()
    buffer = WriteBehind(name="test", write=lambda entries: wrote.set(), merge=later)
    try:
        buffer.add("a", 1, interval=0.05)
        assert wrote.wait(timeout=10)  # a liveness bound, not a speed measurement
        assert buffer.pending() == 0
    finally:
        buffer.close()


def test_a_failed_write_is_logged_and_the_next_one_still_runs(caplog):
    attempts = []

    def write(entries):
        attempts.append(entries)
        if len(attempts) == 1:
            raise RuntimeError("database down")

    buffer = WriteBehind(name="test", write=write, merge=later)
    buffer.add("a", 1, interval=60)
    assert buffer.flush() == 1
    buffer.add("b", 2, interval=60)
    assert buffer.flush() == 1
    buffer.close()

    assert attempts == [[1], [2]]
    assert "event=write_behind_failed buffer=test entries=1" in caplog.text


def test_closing_writes_the_rest_and_then_refuses_additions(buffer, written):
    buffer.add("a", 1, interval=60)  # its thread waits a minute: only close can write it now

    buffer.close()

    assert written == [[1]]
    assert buffer.add("b", 2, interval=60) is False  # the caller writes it itself
    assert buffer.pending() == 0


def _report_pending(buffer, answers):
    answers.put(buffer.pending())


def test_a_forked_child_starts_empty(buffer):
    buffer.add("a", 1, interval=60)
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    child = context.Process(target=_report_pending, args=(buffer, answers))
    child.start()
    child.join(timeout=30)

    assert answers.get(timeout=5) == 0  # the parent's entries are the parent's to write
    assert buffer.pending() == 1
