"""Django's SQLite backend, with write transactions queued on a file lock.

SQLite lets one writer in at a time. A connection that finds the database locked sleeps and
tries again after 1, 2, 5, ... up to 100 ms, so with many annotators at once a request could
sleep far longer than the write it waited for (p99 around 200 ms at 8 annotators). Here each
transaction first takes an exclusive flock on a file beside the database, through one open
file per connection, so threads and processes alike queue on it and the kernel wakes the next
one as soon as the holder commits or rolls back. Writes outside transactions and other programs
opening the database still rely on SQLite's own locking, which stays in force.
"""

from __future__ import annotations

import fcntl

from django.db.backends.sqlite3 import base


class DatabaseWrapper(base.DatabaseWrapper):
    _queue = None  # this connection's open lock file

    def _queue_file(self):
        if self._queue is None and not self.is_in_memory_db():
            self._queue = open(f"{self.settings_dict['NAME']}.writers", "ab")  # noqa: SIM115 - kept open
        return self._queue

    def _dequeue(self) -> None:
        if self._queue is not None:
            fcntl.flock(self._queue, fcntl.LOCK_UN)

    def _start_transaction_under_autocommit(self):
        queue = self._queue_file()
        if queue is not None:
            fcntl.flock(queue, fcntl.LOCK_EX)
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._dequeue()
            raise

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._dequeue()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._dequeue()

    def _close(self):
        try:
            return super()._close()
        finally:
            if self._queue is not None:
                self._queue.close()  # closing the file releases its lock
                self._queue = None
