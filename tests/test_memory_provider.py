"""What only the in-memory storage (providers/memory.py) promises, beyond the contract suite of
test_providers.py: generated sources of a million objects in flat memory, sinks that keep digests
only, one store per name within a process, and its settings refused with one clear line."""
import hashlib
import json
import re
import threading
import tracemalloc

import pytest

from cloudmesh.transfer.config import StorageConfig
from cloudmesh.transfer.errors import Changed, ConfigError, IntegrityError, NotFound, TransferError, UsageError
from cloudmesh.transfer.integrity import Proof
from cloudmesh.transfer.limits import MAX_GENERATED_SIZE, MiB
from cloudmesh.transfer.providers import ObjectInfo, Resumable, open_storage
from test_bad_input import one_error_line
from test_providers import add_memory, build, keys, put, read, shaped

CHUNK = 64 * 1024


def memory(name: str, **settings):
    """A memory storage built as `cms` builds it from a cloudmesh.yaml entry with these settings."""
    return open_storage(StorageConfig(name, "memory", settings))


def read_all(reader, size: int = CHUNK) -> bytes:
    try:
        return b"".join(iter(lambda: reader.read(size), b""))
    finally:
        reader.close()


# generate: N


def test_a_million_generated_objects_are_listed_in_key_order_in_flat_memory(env):
    add_memory(env, "million", generate=1_000_000)
    storage = build(env, "million")
    tracemalloc.start()
    try:
        count, last = 0, ""
        for info in storage.list(""):
            assert info.key > last and info.size == 1024 and len(info.md5) == 32
            count, last = count + 1, info.key
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (count, last) == (1_000_000, "g/00999999")
    assert peak < 1 * MiB, f"listing a million generated objects peaked at {peak} bytes"


def test_a_generated_object_reads_the_same_bytes_each_time_and_its_md5_proves_them():
    storage = memory("gen-read", generate=3, size=3 * CHUNK + 5)
    info = storage.stat("g/00000001")
    reader = storage.open("g/00000001")
    data = read_all(reader, 1000)
    assert len(data) == info.size == 3 * CHUNK + 5
    assert (reader.claim.proof, reader.claim.value, reader.claim.strict) == (Proof.MD5, info.md5, True)
    assert hashlib.md5(data).hexdigest() == info.md5 == next(i for i in storage.list("g") if i.key == info.key).md5
    assert read_all(storage.open("g/00000001")) == data
    assert read_all(storage.open("g/00000002")) != data
    assert read_all(storage.open("g/00000001", CHUNK - 7, CHUNK + 9)) == data[CHUNK - 7:2 * CHUNK + 2]
    assert read_all(storage.open("g/00000001", info.size - 3)) == data[-3:]


@pytest.mark.parametrize("size", [0, 1, 9, 10, 11, 4096, 4097])
def test_generated_objects_of_any_size_have_the_md5_of_their_bytes(size):
    storage = memory("gen-sizes", generate=12, size=size)
    for info in storage.list(""):
        data = read_all(storage.open(info.key))
        assert len(data) == size and hashlib.md5(data).hexdigest() == info.md5


def test_only_the_generated_keys_exist():
    storage = memory("gen-keys", generate=10)
    assert storage.stat("g/00000009").key == "g/00000009"
    for key in ("g/00000010", "g/9", "g/0000000१", "g/00000001/x", "h/00000001", ""):
        assert storage.stat(key) is None
    with pytest.raises(NotFound):
        storage.open("g/00000010")
    assert keys(storage, "g") == keys(storage, "") == {f"g/{i:08d}" for i in range(10)}
    assert list(storage.list("other")) == [] and list(storage.list("g/00000001")) == []
    assert storage.is_folder("g") and not storage.is_folder("h")
    assert list(memory("gen-none", generate=0).list("")) == []


def test_a_generating_storage_refuses_every_write_with_one_clear_error():
    storage = memory("gen-readonly", generate=5)
    source = shaped(b"x")
    attempts = [lambda: storage.check_key("copy/a"), lambda: storage.put("g/00000001", b"x", source, b""),
                lambda: storage.begin("other/key", source), lambda: storage.delete("g/00000001")]
    for attempt in attempts:
        with pytest.raises(UsageError, match="storage 'gen-readonly' generates its objects .* and is read-only"):
            attempt()
    assert storage.stat("g/00000001") is not None


# keep: digest


def test_a_digest_sink_keeps_size_md5_and_metadata_but_not_the_bytes():
    storage = memory("digests", keep="digest")
    tracemalloc.start()
    try:
        for i in range(100):
            data = bytes([i]) * (64 * 1024)  # new bytes each time, which the sink must not hold
            storage.put(f"sink/{i:03d}.bin", data, shaped(data, "application/x-cmtest", {"n": str(i)}),
                        hashlib.md5(data).digest())
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 200 * 1024, f"100 objects of 64 KiB left {held} bytes held"
    info = storage.stat("sink/007.bin")
    assert (info.size, info.md5, info.content_type, info.metadata) == (
        64 * 1024, hashlib.md5(bytes([7]) * (64 * 1024)).hexdigest(), "application/x-cmtest", {"n": "7"})
    assert len(keys(storage, "sink")) == 100
    with pytest.raises(TransferError, match="storage 'digests' keeps digests only"):
        storage.open("sink/007.bin")
    assert not storage.reads_cheaply


def test_a_digest_sink_takes_multipart_uploads_and_checks_their_md5():
    storage = memory("digests-parts", keep="digest")
    first, last = b"1" * 1000, b"2" * 10
    upload = storage.begin("big.bin", shaped(first + last))
    upload.put_part(2, len(first), last, None)
    upload.put_part(1, 0, first, hashlib.md5(first).digest())
    upload.complete(hashlib.md5(first + last).digest())
    assert storage.stat("big.bin").md5 == hashlib.md5(first + last).hexdigest()


# what a write checks, in either kind of store


@pytest.mark.parametrize("keep", ["bytes", "digest"])
def test_a_put_whose_md5_does_not_match_its_bytes_stores_nothing(keep):
    storage = memory(f"checked-{keep}", keep=keep)
    with pytest.raises(IntegrityError, match="do not match their MD5"):
        storage.put("a.txt", b"these bytes", shaped(b"these bytes"), hashlib.md5(b"other bytes").digest())
    assert storage.stat("a.txt") is None


@pytest.mark.parametrize("parts, md5, error", [
    ([(1, 0, b"abc", b"wrong md5 bytes!")], None, "part 1 .* other bytes than its MD5 says"),
    ([(1, 0, b"abc"), (2, 4, b"def")], None, "do not join: one starts at byte 4, not 3"),
    ([(1, 0, b"abc")], None, "wrote 3 bytes .* instead of 6"),
    ([(1, 0, b"abc"), (2, 3, b"def")], hashlib.md5(b"abcxyz").digest(), "do not match the object's MD5"),
])
def test_a_multipart_upload_whose_parts_are_wrong_leaves_nothing(parts, md5, error):
    storage = memory("checked-parts")
    upload = storage.begin("obj.bin", shaped(b"abcdef"))
    with pytest.raises(IntegrityError, match=error):
        for number, offset, data, *part_md5 in parts:
            upload.put_part(number, offset, data, part_md5[0] if part_md5 else None)
        upload.complete(md5)
    assert storage.stat("obj.bin") is None


def test_a_written_object_keeps_its_sources_time_and_a_rewrite_is_another_version():
    storage = memory("versions")
    storage.put("a.txt", b"same", ObjectInfo(key="a.txt", size=4, mtime=1234.5), hashlib.md5(b"same").digest())
    first = storage.stat("a.txt")
    assert first.mtime == 1234.5
    put(storage, "a.txt", b"same")
    assert storage.stat("a.txt").etag != first.etag
    with pytest.raises(Changed):
        storage.delete("a.txt", etag=first.etag)
    with pytest.raises(NotFound):
        storage.delete("missing.txt")


def test_a_memory_storage_offers_no_resumable_uploads():
    """Its parts die with the process, so the engine begins every upload afresh."""
    assert not isinstance(memory("plain"), Resumable)


# listing


def test_a_listing_is_sorted_by_key_and_holds_only_the_folder():
    storage = memory("sorted")
    for key in ("a/b/c", "é", "a/b.txt", "a/ba", "a/b0", "a/b/a", "Z", "a/b"):
        put(storage, key, key.encode())
    assert [i.key for i in storage.list("")] == ["Z", "a/b", "a/b.txt", "a/b/a", "a/b/c", "a/b0", "a/ba", "é"]
    assert [i.key for i in storage.list("a/b")] == ["a/b/a", "a/b/c"]
    assert [i.key for i in storage.list("a/b/")] == ["a/b/a", "a/b/c"]


def test_a_listing_sees_every_write_made_before_it():
    storage = memory("fresh")
    put(storage, "k/1", b"1")
    assert keys(storage, "k") == {"k/1"}
    put(storage, "k/0", b"0")
    assert [i.key for i in storage.list("k")] == ["k/0", "k/1"]
    storage.delete("k/1")
    assert keys(storage, "k") == {"k/0"}


def test_writers_and_listers_in_many_threads_see_a_consistent_store():
    storage = memory("threads")
    errors, seen = [], []

    def write(worker: int) -> None:
        try:
            for i in range(300):
                put(storage, f"w/{worker}/{i:04d}", f"{worker}-{i}".encode())
                if i % 3 == 0:
                    storage.delete(f"w/{worker}/{i:04d}")
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    def list_all() -> None:
        for _ in range(20):
            listed = [i.key for i in storage.list("w")]
            seen.append(listed == sorted(set(listed)))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)] + \
        [threading.Thread(target=list_all) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and all(seen) and len(seen) == 40
    assert keys(storage, "w") == {f"w/{w}/{i:04d}" for w in range(6) for i in range(300) if i % 3}
    assert all(read(storage, key) == f"{key.split('/')[1]}-{int(key.split('/')[2])}".encode()
               for key in keys(storage, "w"))


# keep: nothing


def test_a_nothing_sink_proves_what_is_written_and_keeps_none_of_it():
    storage = memory("void", keep="nothing")
    put(storage, "a/x", b"bytes")
    upload = storage.begin("a/big", shaped(b"12"))
    upload.put_part(1, 0, b"1", hashlib.md5(b"1").digest())
    upload.put_part(2, 1, b"2", hashlib.md5(b"2").digest())
    upload.complete(hashlib.md5(b"12").digest())
    assert storage.stat("a/x") is None and storage.stat("a/big") is None and keys(storage, "a") == set()
    with pytest.raises(IntegrityError):
        storage.put("a/y", b"bytes", shaped(b"bytes"), hashlib.md5(b"other").digest())


def test_ten_times_the_objects_through_the_engine_into_a_nothing_sink_keep_memory_flat(env, tmp_path,
                                                                                      monkeypatch):
    """The engine and its records hold about a page whatever the count: Python's allocations peak
    no higher for 50,000 objects than for 5,000 (tracemalloc; the records in a temporary file)."""
    from cloudmesh.transfer.api import Transfer
    from cloudmesh.transfer.records.sqlite import SQLiteRecords
    monkeypatch.setenv("CLOUDMESH_CONFIG_DIR", str(env.config_dir))
    add_memory(env, "void", keep="nothing")
    peaks = []
    for count in (5_000, 50_000):
        add_memory(env, f"gen{count}", generate=count, size=16)
        api = Transfer(records=SQLiteRecords(tmp_path / f"{count}.db"))
        tracemalloc.start()
        status = api.copy(f"gen{count}:g", "void:out", recursive=True)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert (status["state"], status["objects_done"]) == ("completed", count)
    assert peaks[1] < 1.15 * peaks[0], f"peak {peaks[1]} bytes at 50,000 objects, {peaks[0]} at 5,000"


# one store per name, for the life of the process


def test_a_store_is_shared_by_name_and_no_other_name_shares_it():
    one, again, other = memory("shared"), memory("shared"), memory("shared-too")
    put(one, "x.txt", b"seen by both")
    assert read(again, "x.txt") == b"seen by both"
    assert other.stat("x.txt") is None
    assert one.place("x.txt") == again.place("x.txt") != other.place("x.txt")


def test_two_transfers_in_one_process_see_one_store(env, monkeypatch):
    from cloudmesh.transfer import Transfer
    monkeypatch.setenv("CLOUDMESH_CONFIG_DIR", str(env.config_dir))
    add_memory(env, "mem")
    put(build(env, "mem"), f"{env.prefix}/src/a.txt", b"from outside")
    Transfer().copy(f"mem:{env.prefix}/src", f"mem:{env.prefix}/one", recursive=True)
    status = Transfer().copy(f"mem:{env.prefix}/one", f"mem:{env.prefix}/two", recursive=True)
    assert (status["state"], status["objects_done"], status["proofs"]) == ("completed", 1, {"md5": 1})
    assert read(build(env, "mem"), f"{env.prefix}/two/a.txt") == b"from outside"


def test_cms_copies_two_thousand_generated_objects_each_proven_and_forgets_them_on_exit(env):
    add_memory(env, "gen", generate=2000)
    add_memory(env, "sink", keep="digest")
    result = env.transfer("copy", "--source=gen:", "--target=sink:", "-r", "--output=json")
    assert result.returncode == 0, result.stderr
    copied = json.loads(result.stdout)
    status = json.loads(env.transfer("status", f"--id={copied['id']}", "--output=json").stdout)
    for record in (copied, status):
        assert (record["state"], record["objects_done"], record["objects_failed"], record["proofs"]) == (
            "completed", 2000, 0, {"md5": 2000})
    assert status["route"] == "memory->memory" and status["bytes_done"] == 2000 * 1024
    listed = env.transfer("list", "--target=sink:", "-r", "--output=json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []  # a new process, a new, empty store


# settings


@pytest.mark.parametrize("settings, message", [
    ({"generate": -1}, "storage 'bad' has generate: -1; it is a whole number from 0 to 100000000"),
    ({"generate": "many"}, "storage 'bad' has generate: 'many'; it is a whole number"),
    ({"generate": True}, "storage 'bad' has generate: True; it is a whole number"),
    ({"generate": 10, "size": MAX_GENERATED_SIZE + 1}, f"size: {MAX_GENERATED_SIZE + 1}; it is a whole number "
                                                       f"from 0 to {MAX_GENERATED_SIZE} (64 MiB)"),
    ({"size": 10}, "storage 'bad' has 'size' but no 'generate'"),
    ({"keep": "everything"}, "storage 'bad' has keep: 'everything'; it is bytes, digest or nothing"),
    ({"generate": 10, "keep": "digest"}, "has both 'generate' and 'keep'"),
    ({"genrate": 10}, "storage 'bad' has the unknown setting 'genrate'"),
])
def test_a_bad_setting_is_refused_with_one_clear_line(env, settings, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        memory("bad", **settings)
    add_memory(env, "bad", **settings)
    assert message in one_error_line(env.transfer("list", "--target=bad:"), 2)


def test_settings_may_be_written_as_strings_of_digits():
    storage = memory("gen-strings", generate="3", size="16")
    assert [(i.key, i.size) for i in storage.list("")] == [("g/00000000", 16), ("g/00000001", 16), ("g/00000002", 16)]
