"""Warehouse access: paths, connections and the SQL-file runner every stage shares.

Readers never block publishing and never see a partial write. DuckDB lets no process open a
database file for writing while any other process has it open, even read-only (the DuckDB CLI,
a notebook, a BI tool), so a writer here never opens the file readers open. The warehouse
directory holds immutable snapshots and one pointer to the current one:

    recs.duckdb -> .current/recs.duckdb        fixed symlinks: what readers open
    sequences   -> .current/sequences
    .current    -> .snapshots/<id>             THE pointer: publishing is one os.replace of it
    .snapshots/<id>/recs.duckdb                a complete database, never written once published
    .snapshots/<id>/sequences -> ../../.sequences/<version>
    .sequences/<version>/{train,val,...}/part-0.parquet, meta.json
    .writer.lock                               fcntl.flock: writers serialise

Every writer goes through `connect(warehouse_dir)` (or `recs.publish.connect_with_retry`), which
returns a `WarehouseWriter`: it takes the writer lock, copies the current database into a new
snapshot directory and works on that private copy. `close()` (or leaving a `with` block without
an exception) checkpoints it and flips `.current` to the new snapshot, carrying the parquet
sequence tables a build staged (`stage_sequences`) in the same rename: the DuckDB tables and the
parquet directory change together or not at all. A writer that dies before the flip leaves the
current snapshot untouched (the next writer removes its leftovers); the kernel drops its flock
with the process, so no lock goes stale. A reader holding the old snapshot keeps reading it
whole (POSIX: a replaced or removed file stays readable while open); a new reader opens the new
one. Readers open read-only: `connect(warehouse_dir, read_only=True)`, or
`duckdb -readonly warehouse/recs.duckdb`.

A warehouse written before snapshots existed (a plain `recs.duckdb` file and `sequences/`
directory) is adopted, content unchanged, by its first writer.
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import duckdb

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
SQL_DIR = REPO_ROOT / "sql"
DEFAULT_WAREHOUSE = Path("warehouse")
DEFAULT_CHECKPOINTS = Path("checkpoints")
DB_FILENAME = "recs.duckdb"
SEQUENCES_NAME = "sequences"
CURRENT_LINK = ".current"
SNAPSHOTS_DIR = ".snapshots"
SEQUENCE_VERSIONS_DIR = ".sequences"
LOCK_FILENAME = ".writer.lock"
# Writers hold the lock for one stage's writes (seconds at full scale, the copy included): two
# minutes of waiting means something is stuck, and the error names the holder's pid.
WRITER_LOCK_TIMEOUT_S = 120.0
# DuckDB's default buffer pool is 80% of RAM and it keeps what it reads cached: a pipeline that
# streams 2.76M rows needs far less (it spills to disk beyond the limit). bench/pipeline.py at
# full scale (ingest + build): 250MB -> 4.6 s / 433 MB peak, 200MB -> 4.6 s / 400 MB,
# 150MB -> 4.9 s / 391 MB.
# Raise it for much larger inputs with RECS_DUCKDB_MEMORY_LIMIT.
DEFAULT_MEMORY_LIMIT = "200MB"


def db_path(warehouse_dir: str | Path) -> Path:
    """The DuckDB file inside a warehouse directory (what readers open)."""
    return Path(warehouse_dir) / DB_FILENAME


def sequences_dir(warehouse_dir: str | Path) -> Path:
    """Root of the parquet sequence tables (train/val/test/serving/items/customers)."""
    return Path(warehouse_dir) / SEQUENCES_NAME


def current_snapshot(warehouse_dir: str | Path) -> Path | None:
    """The published snapshot directory (None before the first publish or in an old layout)."""
    link = Path(warehouse_dir) / CURRENT_LINK
    if not link.is_symlink():
        return None
    return Path(warehouse_dir) / os.readlink(link)


def pinned_sequences_dir(warehouse_dir: str | Path) -> Path:
    """The sequence tables of the current snapshot, resolved once: a reader loading several
    tables from it cannot mix two builds when one publishes meanwhile."""
    return Path(os.path.realpath(sequences_dir(warehouse_dir)))


def connect(warehouse_dir: str | Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the warehouse: a read-only connection to the current snapshot, or a `WarehouseWriter`
    (see the module docstring) that publishes what it committed when closed."""
    if read_only:
        return _open_snapshot(warehouse_dir)
    return open_writer(warehouse_dir)


def connect_read_only(warehouse_dir: str | Path, timeout_s: float = WRITER_LOCK_TIMEOUT_S,
                      poll_s: float = 0.2) -> duckdb.DuckDBPyConnection:
    """`connect(read_only=True)`, waiting while a process that does not follow the snapshot rule
    (an old-layout writer) holds the file."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return _open_snapshot(warehouse_dir)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(poll_s)


def _open_snapshot(warehouse_dir: str | Path) -> duckdb.DuckDBPyConnection:
    """Read-only connection to the file `recs.duckdb` resolves to now.

    Opened by its resolved path, not through the symlink: DuckDB caches open databases per path
    in a process, so a new connection after a publish gets the new snapshot even while an older
    connection of this process still reads the previous one.
    """
    path = db_path(warehouse_dir)
    for attempt in range(3):
        if not path.exists():
            raise FileNotFoundError(f"no warehouse at {path}: run `recs ingest` first")
        resolved = os.path.realpath(path)
        try:
            return duckdb.connect(resolved, read_only=True)
        except duckdb.IOException:
            # A writer published and removed this snapshot between resolving and opening it.
            if os.path.exists(resolved) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def open_writer(warehouse_dir: str | Path, timeout_s: float = WRITER_LOCK_TIMEOUT_S,
                poll_s: float = 0.2) -> "WarehouseWriter":
    """Take the writer lock (waiting up to timeout_s for another writer) and open a private
    copy of the current database; see `WarehouseWriter`."""
    return WarehouseWriter(warehouse_dir, timeout_s=timeout_s, poll_s=poll_s)


# Warehouses whose writer lock a thread of this process holds: a second writer in the same
# thread would wait for itself until the timeout, so it fails at once instead.
_HELD: dict[str, int] = {}
_HELD_GUARD = threading.Lock()


class WriterLock:
    """An exclusive fcntl.flock on `<warehouse>/.writer.lock` (released by the kernel when the
    holder dies, so it never goes stale)."""

    def __init__(self, warehouse_dir: Path, timeout_s: float, poll_s: float) -> None:
        self._key = os.path.realpath(warehouse_dir)
        with _HELD_GUARD:
            if _HELD.get(self._key) == threading.get_ident():
                raise RuntimeError(f"this thread already has a writer of {warehouse_dir} open: close it first")
        path = Path(warehouse_dir) / LOCK_FILENAME
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    os.close(self._fd)
                    self._fd = None
                    raise TimeoutError(f"another writer (pid {holder}) has held {path} for over {timeout_s:g} s") from None
                time.sleep(poll_s)
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)  # for the waiting writers' error message
        with _HELD_GUARD:
            _HELD[self._key] = threading.get_ident()

    def release(self) -> None:
        if self._fd is None:
            return
        with _HELD_GUARD:
            _HELD.pop(self._key, None)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _new_id() -> str:
    """Sortable, unique name of a snapshot or sequences version."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:6]}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_symlink(link: Path, target: str) -> None:
    """Point `link` at `target` in one rename (a reader resolves the old target or the new one)."""
    tmp = link.with_name(f"{link.name}.tmp-{uuid.uuid4().hex[:8]}")
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _sequences_version(snapshot: Path | None) -> str | None:
    """Name of the `.sequences/<version>` a snapshot refers to (None: no sequence tables)."""
    if snapshot is None or not (snapshot / SEQUENCES_NAME).is_symlink():
        return None
    return Path(os.readlink(snapshot / SEQUENCES_NAME)).name


def _open_writable(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    con.execute(f"SET memory_limit = '{os.environ.get('RECS_DUCKDB_MEMORY_LIMIT', DEFAULT_MEMORY_LIMIT)}'")
    return con


def _wal(db: Path) -> Path:
    return db.with_name(db.name + ".wal")


def _close_checkpointed(con: duckdb.DuckDBPyConnection, db: Path) -> None:
    """Roll back an open transaction (as closing would), checkpoint and close: the file is then
    the whole database, with no write-ahead log beside it."""
    try:
        try:
            con.execute("ROLLBACK")
        except duckdb.TransactionException:
            pass  # no transaction open
        con.execute("CHECKPOINT")
    finally:
        con.close()
    wal = _wal(db)
    if wal.exists():
        if wal.stat().st_size:
            raise RuntimeError(f"{wal} still holds changes after the checkpoint (is a cursor of the writer still open?)")
        wal.unlink()
    shutil.rmtree(db.with_name(db.name + ".tmp"), ignore_errors=True)  # DuckDB's spill directory


def _publish_snapshot(warehouse_dir: Path, snapshot: Path) -> None:
    """Make `snapshot` the current one: the single rename every reader sees as the change.

    Until the rename nothing is visible; once it is done the snapshot is published, whatever
    happens after (`_link_entries`)."""
    db = snapshot / DB_FILENAME
    if db.exists():
        os.chmod(db, 0o444)  # published files are never written again (keeps other tools off it)
        _fsync(db)
    _fsync(snapshot)
    _replace_symlink(warehouse_dir / CURRENT_LINK, f"{SNAPSHOTS_DIR}/{snapshot.name}")


def _link_entries(warehouse_dir: Path, snapshot: Path) -> None:
    """The fixed `recs.duckdb` / `sequences` symlinks through `.current` (after a first publish
    or an adoption replaced the old layout's plain file and directory)."""
    for name in (DB_FILENAME, SEQUENCES_NAME):
        # Only entries the snapshot has: a dangling `sequences` link would trip copies
        # (shutil.copytree) of a warehouse that was never built.
        if (snapshot / name).exists() and not (warehouse_dir / name).is_symlink():
            _replace_symlink(warehouse_dir / name, f"{CURRENT_LINK}/{name}")
    _fsync(warehouse_dir)


def _collect_garbage(warehouse_dir: Path, keep_sequences: set[str | None]) -> None:
    """Remove snapshots other than the current one (readers holding them keep their open files)
    and sequence versions nobody refers to. The previous sequence version is in keep_sequences:
    a reader that resolved `sequences/` just before the flip may still be opening its files."""
    current = current_snapshot(warehouse_dir)
    keep_sequences = keep_sequences | {_sequences_version(current)}
    for snapshot in sorted((warehouse_dir / SNAPSHOTS_DIR).glob("*")):
        if current is None or snapshot.name != current.name:
            shutil.rmtree(snapshot, ignore_errors=True)
    for version in sorted((warehouse_dir / SEQUENCE_VERSIONS_DIR).glob("*")):
        if version.name not in keep_sequences:
            shutil.rmtree(version, ignore_errors=True)
    for tmp in warehouse_dir.glob("*.tmp-*"):
        if tmp.is_symlink():
            tmp.unlink(missing_ok=True)


def _adopt_old_layout(warehouse_dir: Path, timeout_s: float, poll_s: float) -> None:
    """Turn a plain `recs.duckdb` file and `sequences/` directory (the layout before snapshots,
    or a copy that followed the symlinks) into the first snapshot, content unchanged.

    Runs under the writer lock. The file is copied while a read-only DuckDB connection holds it:
    an old-style writer still writing it makes that connection wait, and none can start
    meanwhile. A write-ahead log left beside it is replayed into the copy.
    """
    db, seq = db_path(warehouse_dir), sequences_dir(warehouse_dir)
    old_db = db.exists() and not db.is_symlink()
    old_seq = seq.is_dir() and not seq.is_symlink()
    if not (old_db or old_seq):
        return
    current = warehouse_dir / CURRENT_LINK
    if current.exists() and not current.is_symlink():  # a copy that followed the symlinks
        shutil.rmtree(current)
    base = current_snapshot(warehouse_dir)  # what the half that is not old-style comes from
    snapshot = warehouse_dir / SNAPSHOTS_DIR / _new_id()
    snapshot.mkdir(parents=True)
    copy = snapshot / DB_FILENAME
    if old_db:
        guard = connect_read_only(warehouse_dir, timeout_s=timeout_s, poll_s=poll_s)
        try:
            shutil.copyfile(db, copy)
            if _wal(db).exists():
                shutil.copyfile(_wal(db), _wal(copy))
        finally:
            guard.close()
        _close_checkpointed(_open_writable(copy), copy)
    elif base is not None and (base / DB_FILENAME).exists():
        shutil.copyfile(base / DB_FILENAME, copy)
    version = _sequences_version(base)
    if old_seq:
        version = _new_id()
        (warehouse_dir / SEQUENCE_VERSIONS_DIR).mkdir(exist_ok=True)
        # `sequences/` is missing between this rename and the symlink below (a directory cannot
        # be renamed over): a one-time window of microseconds.
        os.rename(seq, warehouse_dir / SEQUENCE_VERSIONS_DIR / version)
    if version is not None:
        os.symlink(f"../../{SEQUENCE_VERSIONS_DIR}/{version}", snapshot / SEQUENCES_NAME)
    _publish_snapshot(warehouse_dir, snapshot)
    _link_entries(warehouse_dir, snapshot)
    # After recs.duckdb became the symlink: a reader opening the old file meanwhile still had it.
    _wal(db).unlink(missing_ok=True)
    log.info("adopted the old warehouse layout of %s into snapshot %s", warehouse_dir, snapshot.name)


class WarehouseWriter:
    """A writable connection to a private copy of the warehouse database, published on close.

    Behaves like the `duckdb.DuckDBPyConnection` it wraps (execute, sql, register, ...). What it
    committed becomes visible to readers all at once when `close()` flips `.current` to its
    snapshot, together with the sequence tables `stage_sequences` handed it; an open transaction
    is rolled back first, as closing a DuckDB connection would. `discard()` throws the copy
    away. As a context manager: published when the block ends normally, discarded when it raises.
    """

    def __init__(self, warehouse_dir: str | Path, timeout_s: float = WRITER_LOCK_TIMEOUT_S,
                 poll_s: float = 0.2) -> None:
        self.warehouse_dir = Path(warehouse_dir)
        # Fault-injection point for tests: called with the snapshot directory, complete and
        # closed, just before it is published.
        self.before_publish: Callable[[Path], None] | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self.snapshot_dir: Path | None = None
        self._lock: WriterLock | None = None
        self._previous_sequences = self._sequences = None
        self.warehouse_dir.mkdir(parents=True, exist_ok=True)
        self._lock = WriterLock(self.warehouse_dir, timeout_s, poll_s)
        try:
            _adopt_old_layout(self.warehouse_dir, timeout_s, poll_s)
            base = current_snapshot(self.warehouse_dir)
            self._previous_sequences = self._sequences = _sequences_version(base)
            self.snapshot_dir = self.warehouse_dir / SNAPSHOTS_DIR / _new_id()
            self.snapshot_dir.mkdir(parents=True)
            db = self.snapshot_dir / DB_FILENAME
            if base is not None and (base / DB_FILENAME).exists():
                shutil.copyfile(base / DB_FILENAME, db)  # a new file: writable whatever the source's mode
            self._con = _open_writable(db)
        except BaseException:
            self.discard()
            raise

    # -- the wrapped connection ------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # our own attributes, before __init__ set them
            raise AttributeError(name)
        return getattr(self._live(), name)

    def _live(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise duckdb.ConnectionException("this warehouse writer is closed")
        return self._con

    @property
    def closed(self) -> bool:
        return self._con is None

    # -- sequence tables -------------------------------------------------------------------
    def new_sequences_dir(self) -> Path:
        """A fresh, not yet existing `.sequences/<version>` directory to write a build into
        (nobody refers to it until `stage_sequences` and `close`)."""
        root = self.warehouse_dir / SEQUENCE_VERSIONS_DIR
        root.mkdir(exist_ok=True)
        return root / _new_id()

    def stage_sequences(self, directory: Path) -> None:
        """Publish `directory` (from `new_sequences_dir`, complete) as `sequences/` with this
        writer's database."""
        directory = Path(directory)
        if directory.parent.resolve() != (self.warehouse_dir / SEQUENCE_VERSIONS_DIR).resolve() or not directory.is_dir():
            raise ValueError(f"{directory} is not a sequences version of {self.warehouse_dir}")
        self._live()
        self._drop_staged()
        self._sequences = directory.name

    def _drop_staged(self) -> None:
        if self._sequences is not None and self._sequences != self._previous_sequences:
            shutil.rmtree(self.warehouse_dir / SEQUENCE_VERSIONS_DIR / self._sequences, ignore_errors=True)
        self._sequences = self._previous_sequences

    # -- publish / discard -----------------------------------------------------------------
    def close(self) -> None:
        """Publish the committed state (a no-op when already closed or discarded)."""
        if self._con is None:
            return
        con, self._con = self._con, None
        snapshot = self.snapshot_dir
        assert snapshot is not None
        from recs.feedback import fold_pending, remove_folded

        try:
            # Ratings the page stored as files since the last publish (it never takes this lock).
            folded = fold_pending(con, self.warehouse_dir)
            _close_checkpointed(con, snapshot / DB_FILENAME)
            if self._sequences is not None:
                os.symlink(f"../../{SEQUENCE_VERSIONS_DIR}/{self._sequences}", snapshot / SEQUENCES_NAME)
            if self.before_publish is not None:
                self.before_publish(snapshot)
            _publish_snapshot(self.warehouse_dir, snapshot)
        except BaseException:
            self.discard()
            raise
        # Published: nothing below may throw the snapshot or its sequences away (discard() after
        # close() is a no-op).
        self.snapshot_dir = None
        keep = {self._sequences, self._previous_sequences}
        self._previous_sequences = self._sequences
        try:
            remove_folded(folded)
            _link_entries(self.warehouse_dir, snapshot)
            try:
                _collect_garbage(self.warehouse_dir, keep)
            except OSError as exc:  # leftovers go with the next writer
                log.warning("could not remove old snapshots of %s: %s", self.warehouse_dir, exc)
        finally:
            self._release()

    def discard(self) -> None:
        """Throw the private copy away: readers keep the current snapshot."""
        if self._con is not None:
            con, self._con = self._con, None
            try:
                con.close()
            except duckdb.Error:
                pass
        if self.snapshot_dir is not None:
            shutil.rmtree(self.snapshot_dir, ignore_errors=True)
            self.snapshot_dir = None
            self._drop_staged()
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "WarehouseWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()

    def __del__(self) -> None:
        # Never closed (the caller lost it): throw the copy away rather than publish a write
        # nobody finished on purpose.
        try:
            if self._lock is not None:
                log.warning("a writer of %s was never closed: its writes are discarded (close() publishes)",
                            self.warehouse_dir)
                self.discard()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def read_sql(name: str) -> str:
    """Text of `sql/<name>.sql`, e.g. read_sql("staging/stg_events")."""
    path = SQL_DIR / f"{name}.sql"
    return path.read_text()


_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def sql_params(sql: str) -> set[str]:
    """The `$name` parameters a statement uses (string literals are not special-cased)."""
    return set(_PARAM.findall(sql))


def run_sql(con: duckdb.DuckDBPyConnection, name: str, **params: Any) -> duckdb.DuckDBPyConnection:
    """Run one statement from `sql/<name>.sql`, binding only the `$name` parameters it uses.

    Missing parameters fail loudly with the file name rather than as a DuckDB binder error.
    """
    sql = read_sql(name)
    wanted = sql_params(sql)
    missing = wanted - params.keys()
    if missing:
        raise ValueError(f"sql/{name}.sql needs parameters {sorted(missing)}")
    bound = {k: v for k, v in params.items() if k in wanted}
    return con.execute(sql, bound) if bound else con.execute(sql)


def table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """True when a table or view of that name exists in the main schema."""
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
        ).fetchone()[0]
    )


@contextmanager
def duckdb_setting(con: duckdb.DuckDBPyConnection, name: str, value: bool | int) -> Iterator[None]:
    """`SET name = value` for the duration of the block; the previous value is restored after it,
    also when the block fails."""
    [(previous,)] = con.execute(f"SELECT current_setting('{name}')").fetchall()
    con.execute(f"SET {name} = {value}")
    try:
        yield
    finally:
        con.execute(f"SET {name} = {previous}")
