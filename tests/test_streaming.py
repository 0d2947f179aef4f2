"""The streaming pipeline (pipeline.py): a transfer is recorded at once and its source is listed,
planned and recorded a page at a time as the engine takes the objects, so that it starts at once
whatever the size of the source, holds about a page, and can be killed at any moment (listing
included) and resumed without sending a completed object again.

The sources of a hundred million objects are the in-memory provider's generated objects (no
memory, no disk); the kill and resume tests copy to local disk through the real `cms transfer`.
"""
import json
import os
import signal
import sqlite3

import pytest

from cloudmesh.transfer.location import Location
from cloudmesh.transfer.march import Lookup
from cloudmesh.transfer.planner import Judge, Selection, stream
from cloudmesh.transfer.providers import ObjectInfo
from test_providers import add_memory, build, put, read
from test_resume_cancel import Background, until

HUGE = 100_000_000  # generated objects: listing them whole before the first byte would take hours and 100 GB


def info(key: str, size: int = 1) -> ObjectInfo:
    return ObjectInfo(key=key, size=size)


class Counted:
    """A listing that counts how many objects were taken from it."""

    def __init__(self, keys):
        self.keys, self.taken = keys, 0

    def __iter__(self):
        for key in self.keys:
            self.taken += 1
            yield info(key)


# march.Lookup: a merge, one listed object at a time


def test_a_lookup_finds_keys_asked_in_order_reading_the_listing_only_as_far_as_them():
    listing = Counted(["a", "b", "d", "e", "f"])
    lookup = Lookup(listing)
    assert lookup.get("b").key == "b" and listing.taken == 2
    assert lookup.get("c") is None and listing.taken == 3  # stopped at "d", which it keeps
    assert lookup.get("d").key == "d" and listing.taken == 3
    assert lookup.get("z") is None and listing.taken == 5
    assert lookup.get("zz") is None


def test_a_key_asked_out_of_order_is_not_found_rather_than_wrongly_matched():
    lookup = Lookup(info(k) for k in ["a", "b", "c"])
    assert lookup.get("c").key == "c"
    assert lookup.get("a") is None  # the caller looks such a key up itself


def test_sync_compares_with_the_target_as_both_stream(env):
    """A Judge marks in-sync objects by merging with the target's listing; planning the first page
    of a large source reads the target's listing no further than that page's keys."""
    add_memory(env, "mem")
    source, target = build(env, "mem"), build(env, "mem")
    for n in range(3000):
        put(source, f"src/{n:05d}", b"x")
        if n % 2 == 0:
            put(target, f"dst/{n:05d}", b"x")
    listed = Counted([i.key for i in target.list("dst")])
    judge = Judge(source, target, Location("mem", "dst"), "checksum")
    judge.listed = Lookup(listed)
    pages = stream(source, Location("mem", "src"), target, Location("mem", "dst"), True, Selection())
    first = next(pages)
    judge.mark(first.items)
    assert len(first.items) == 1000 and [i.skip for i in first.items[:4]] == [True, False, True, False]
    assert listed.taken <= 501  # half the first page's keys are at the target, and one beyond


# The real command: a hundred million objects


def records_db(env) -> str:
    return str(env.config_dir / "transfer.db")


def row(env, transfer_id: str) -> dict | None:
    """The transfer's status as `cms transfer status` gives it (a new process each time)."""
    result = env.transfer("status", f"--id={transfer_id}", "--output=json")
    return json.loads(result.stdout) if result.returncode == 0 else None


def test_a_copy_of_a_hundred_million_objects_starts_at_once_shows_its_listing_and_cancels(env):
    add_memory(env, "huge", generate=HUGE, size=16)
    with Background(env, "copy", "--source=huge:g", "--target=local:out", "-r", "--id=huge") as run:
        until(lambda: (env.local / "out").is_dir() and any((env.local / "out").iterdir()),
              "the first object at the target", run, timeout=60)
        first = until(lambda: row(env, "huge"), "the transfer's record", run)
        assert first["state"] == "running" and first["listing"] is True
        assert 0 < first["objects_total"] < HUGE
        later = until(lambda: (s := row(env, "huge")) and s["objects_total"] > first["objects_total"] and s,
                      "more objects planned", run)
        assert later["listing"] is True and later["objects_done"] > 0
        cancelled = env.transfer("cancel", "--id=huge", "--output=json")
        assert cancelled.returncode == 0, cancelled.stderr
        assert run.wait(60) == 1 and "transfer 'huge' cancelled" in run.stderr
        assert "objects listed so far" in run.stderr
    status = row(env, "huge")
    assert status["state"] == "cancelled" and status["listing"] is True
    assert status["objects_total"] < 100_000  # planned as it was copied, never listed ahead


def test_a_dry_run_of_a_hundred_million_objects_prints_as_it_lists(env):
    add_memory(env, "huge", generate=HUGE, size=16)
    with Background(env, "copy", "--source=huge:g", "--target=local:out", "-r", "--dryrun",
                    "--output=json") as run:
        until(lambda: run.stdout.count("\n") > 2000, "the first rows of the plan", run, timeout=60)
        rows = [json.loads(line.rstrip(",")) for line in run.stdout.splitlines()[1:2000]]
        run.process.kill()
    assert [r["path"] for r in rows[:2]] == ["00000000", "00000001"] and rows[0]["action"] == "copy"
    assert not (env.local / "out").exists()


# kill -9 at any moment, listing included, then resume


def landed(env) -> dict[str, tuple[int, int]]:
    """The complete files at the target, with their inode and time (a file sent again changes both)."""
    out = env.local / "out"
    found = {}
    for folder, _, names in os.walk(out):
        for name in names:
            if not name.endswith(".cmtransfer.partial"):
                st = os.stat(os.path.join(folder, name))
                found[os.path.relpath(os.path.join(folder, name), out)] = (st.st_ino, st.st_mtime_ns)
    return found


def recorded(env, transfer_id: str) -> int:
    """Objects recorded so far, read straight from the records (a kill must not wait for a process)."""
    try:
        with sqlite3.connect(f"file:{records_db(env)}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT count(*) FROM objects WHERE transfer_id = ?", (transfer_id,)).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.parametrize("include", [None, "*[02468]"])
def test_kill_9_while_listing_then_resume_finishes_without_sending_a_completed_object_again(env, include):
    """Killed first as soon as the transfer is recorded (still listing its first pages), then once a
    few thousand objects are done; each resume lists on from its cursor (with the transfer's
    selection) and settles what is recorded. In the end every object is at the target with the
    bytes of its source, and no file that was complete at the target after a kill was written again."""
    count, size = 6000, 64
    add_memory(env, "gen", generate=count, size=size)
    selection = [f"--include={include}"] if include else []
    args = ["--source=gen:g", "--target=local:out", "-r", "--id=k", *selection]
    before: dict[str, tuple[int, int]] = {}
    with Background(env, "copy", *args) as run:
        until(lambda: recorded(env, "k") > 0, "the first page recorded", run, timeout=60)
        run.process.send_signal(signal.SIGKILL)
    status = row(env, "k")
    assert status["state"] == "interrupted" and status["listing"] is True
    assert status["objects_total"] < count
    before.update(landed(env))
    with Background(env, "resume", "--id=k") as run:
        until(lambda: len(landed(env)) > len(before) + 1500, "more objects copied", run, timeout=120)
        run.process.send_signal(signal.SIGKILL)
    assert row(env, "k")["state"] == "interrupted"
    complete = landed(env)
    resumed = env.transfer("resume", "--id=k", "--output=json", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads(resumed.stdout)
    wanted = [n for n in range(count) if include is None or n % 2 == 0]
    assert (final["state"], final["listing"], final["objects_total"], final["objects_failed"]) == (
        "completed", False, len(wanted), 0)
    after = landed(env)
    assert sorted(after) == [f"{n:08d}" for n in wanted]
    source = build(env, "gen")
    for n in wanted:
        assert (env.local / "out" / f"{n:08d}").read_bytes() == read(source, f"g/{n:08d}"), n
    assert {path: after[path] for path in complete} == complete  # nothing complete was sent again


def test_a_listing_that_fails_after_its_first_page_fails_the_transfer_and_resume_lists_on(env, request):
    """S3 answers the second page of the listing with 503s (behind a fault proxy, no retries): the
    objects of the first page are copied, the transfer ends failed with the listing's error and
    still listing; resumed once S3 answers again, it lists on from its cursor and completes."""
    from test_resume_cancel import plain_proxy
    p = env.prefix
    count = 1200  # S3 lists 1,000 keys a page
    for n in range(count):
        env.put("awss3", f"{p}/src/{n:05d}", f"object {n}".encode())
    proxy, name = plain_proxy(env, request, "awss3")
    proxy.configure(error_rate=1.0, match=("GET", r"continuation-token="))
    args = [f"--source={name}:{p}/src", "--target=local:out", "-r", f"--id={p}"]
    first = env.transfer("copy", *args, "--retries=0", "--output=json")
    assert first.returncode == 1 and proxy.faults["error"] > 0, first.stderr
    status = row(env, p)
    assert (status["state"], status["listing"], status["objects_total"]) == ("failed", True, 1000)
    assert "503" in status["message"] or "SlowDown" in status["message"], status["message"]
    proxy.configure(error_rate=0.0)
    resumed = env.transfer("resume", f"--id={p}", "--output=json")
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads(resumed.stdout)
    assert (final["state"], final["listing"], final["objects_total"], final["objects_failed"]) == (
        "completed", False, count, 0)
    assert env.tree("local", "out") == {f"{n:05d}": f"object {n}".encode() for n in range(count)}
