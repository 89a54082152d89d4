"""The embedded default's SQLite backend queues write transactions on a file lock: held from
BEGIN to COMMIT or ROLLBACK, by one connection at a time, and never left behind."""

from __future__ import annotations

import fcntl
import threading

import pytest
from django.db.utils import ConnectionHandler

pytestmark = pytest.mark.sqlite


@pytest.fixture
def sqlite(tmp_path, django_db_blocker):
    # A database of its own, not the test database: pytest-django's guard is lifted for it.
    django_db_blocker.unblock()
    handler = ConnectionHandler({"default": {
        "ENGINE": "config.sqlite_backend", "NAME": str(tmp_path / "db.sqlite3"),
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 5}}})
    conn = handler["default"]
    with conn.cursor() as cursor:
        cursor.execute("CREATE TABLE t (x integer)")
    yield handler, tmp_path / "db.sqlite3.writers"
    handler.close_all()
    django_db_blocker.restore()


def queue_is_free(path) -> bool:
    with open(path, "ab") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
        return True


def test_a_transaction_holds_the_queue_until_commit_or_rollback(sqlite):
    handler, queue = sqlite
    with _atomic(handler):
        handler["default"].cursor().execute("INSERT INTO t VALUES (1)")
        assert not queue_is_free(queue)
    assert queue_is_free(queue)
    with pytest.raises(RuntimeError), _atomic(handler):
        handler["default"].cursor().execute("INSERT INTO t VALUES (2)")
        raise RuntimeError("roll back")
    assert queue_is_free(queue)
    assert handler["default"].cursor().execute("SELECT count(*) FROM t").fetchone()[0] == 1


def test_a_second_writer_waits_for_the_first_then_goes_on(sqlite):
    handler, queue = sqlite
    order: list[str] = []
    first_in = threading.Event()

    def second():
        first_in.wait(5)
        with _atomic(handler):  # this thread gets its own connection from the handler
            order.append("second")
            handler["default"].cursor().execute("INSERT INTO t VALUES (2)")
        handler["default"].close()

    thread = threading.Thread(target=second)
    thread.start()
    with _atomic(handler):
        first_in.set()
        thread.join(0.3)  # the second writer is queued, not failing with "database is locked"
        assert thread.is_alive() and order == []
        order.append("first")
        handler["default"].cursor().execute("INSERT INTO t VALUES (1)")
    thread.join(5)
    assert order == ["first", "second"] and queue_is_free(queue)


def _atomic(handler):
    """What transaction.atomic does with a connection, for a connection of our own handler."""
    conn = handler["default"]

    class Atomic:
        def __enter__(self):
            conn.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)

        def __exit__(self, exc_type, *_):
            (conn.rollback if exc_type else conn.commit)()
            conn.set_autocommit(True)

    return Atomic()
