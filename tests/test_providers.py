"""One contract, every provider: local disk, S3 (moto) and Azure Blob (Azurite) over real HTTP,
and the in-memory storage.

Each test builds its storage the way `cms` does, from the test's cloudmesh.yaml, and checks one
promise of the Storage interface in providers/base.py; the optional capabilities are checked on
the kinds that offer them.
"""
import base64
import hashlib
import mimetypes
import os

import pytest

import emulators as emu
from cloudmesh.transfer.config import load_storages
from cloudmesh.transfer.errors import Changed, ConfigError, NotFound, TransferError, UsageError
from cloudmesh.transfer.integrity import Proof
from cloudmesh.transfer.providers import ObjectInfo, Resumable, open_storage

CHUNK = 64 * 1024
KINDS = ["local", "awss3", "azure", "memory"]
RESUMABLE = ["local", "awss3", "azure"]  # the kinds whose uploads a later run can reopen or discard


def add_memory(env, name: str = "memory", **settings) -> None:
    """Add an in-memory storage (providers/memory.py) with these settings to the test's cloudmesh.yaml."""
    entry = {"cm": {"kind": "memory", "name": name}, **({"default": settings} if settings else {})}
    env.storages[name] = entry
    emu.write_config(env.config_dir, env.storages)


def build(env, name: str):
    if name == "memory" and name not in env.storages:
        add_memory(env)
    return open_storage(load_storages(env.config_dir / "cloudmesh.yaml")[name])


@pytest.fixture(params=KINDS)
def storage(request, env):
    return build(env, request.param)


@pytest.fixture(params=RESUMABLE)
def resumable(request, env):
    storage = build(env, request.param)
    assert isinstance(storage, Resumable)
    return storage


def shaped(data: bytes = b"", content_type: str | None = None, metadata: dict | None = None) -> ObjectInfo:
    return ObjectInfo(key="source", size=len(data), content_type=content_type, metadata=metadata or {})


def put(storage, key: str, data: bytes, **source) -> None:
    storage.put(key, data, shaped(data, **source), hashlib.md5(data).digest())


def read(storage, key: str, offset: int = 0, length: int | None = None) -> bytes:
    reader = storage.open(key, offset, length)
    try:
        return b"".join(iter(lambda: reader.read(CHUNK), b""))
    finally:
        reader.close()


def keys(storage, prefix: str) -> set[str]:
    return {info.key for info in storage.list(prefix)}


def long_key(length: int) -> str:
    """An ASCII key of exactly `length` bytes whose components are short enough for any disk."""
    key = ("a" * 99 + "/") * (length // 100) + "b" * (length % 100)
    return key if not key.endswith("/") else key[:-1] + "b"


# put, stat, open


def test_put_then_stat_reports_size_and_md5_where_the_kind_has_one(storage, env):
    data = os.urandom(1000)
    put(storage, f"{env.prefix}/one.bin", data)
    info = storage.stat(f"{env.prefix}/one.bin")
    assert info.key == f"{env.prefix}/one.bin"
    assert info.size == len(data)
    expected = None if storage.kind == "local" else hashlib.md5(data).hexdigest()
    assert info.md5 == expected


def test_empty_object_round_trips(storage, env):
    put(storage, f"{env.prefix}/empty.dat", b"")
    assert storage.stat(f"{env.prefix}/empty.dat").size == 0
    assert read(storage, f"{env.prefix}/empty.dat") == b""


def test_open_streams_the_bytes_in_reads_no_larger_than_asked(storage, env):
    data = os.urandom(3 * CHUNK + 123)
    put(storage, f"{env.prefix}/big.bin", data)
    reader = storage.open(f"{env.prefix}/big.bin")
    try:
        chunks = list(iter(lambda: reader.read(CHUNK), b""))
    finally:
        reader.close()
    assert b"".join(chunks) == data
    assert len(chunks) > 1 and max(map(len, chunks)) <= CHUNK


def test_a_reader_closed_before_its_end_leaves_the_next_requests_intact(storage, env):
    """Closing a reader early (the cluster opens large objects only for their claim) must not
    leave its unread bytes to be read as the answer to the next request on the connection
    (urllib3 sees a pooled connection with bytes waiting as dropped, and opens a new one)."""
    data, other = os.urandom(8 * CHUNK + 5), os.urandom(2 * CHUNK)
    put(storage, f"{env.prefix}/big.bin", data)
    put(storage, f"{env.prefix}/other.bin", other)
    for _ in range(3):
        reader = storage.open(f"{env.prefix}/big.bin")
        assert reader.read(10) == data[:10]
        reader.close()
        assert read(storage, f"{env.prefix}/other.bin") == other
        assert storage.stat(f"{env.prefix}/other.bin").size == len(other)


def test_open_reads_a_byte_range(storage, env):
    data = os.urandom(2 * CHUNK)
    put(storage, f"{env.prefix}/ranged.bin", data)
    assert read(storage, f"{env.prefix}/ranged.bin", 100, 5000) == data[100:5100]
    assert read(storage, f"{env.prefix}/ranged.bin", CHUNK) == data[CHUNK:]


def test_open_reports_the_md5_the_source_claims_for_a_whole_object(storage, env):
    """S3's single-part ETag and the Content-MD5 Azure keeps of a blob put in one request are its
    MD5; a local file proves itself by being read."""
    data = b"claimed" * 100
    put(storage, f"{env.prefix}/claim.txt", data)
    reader = storage.open(f"{env.prefix}/claim.txt")
    reader.close()
    if storage.kind == "local":
        assert reader.claim.proof is Proof.READ
    else:
        assert (reader.claim.proof, reader.claim.value) == (Proof.MD5, hashlib.md5(data).hexdigest())


def test_open_keeps_content_type_and_metadata_where_the_kind_stores_them(storage, env):
    key = f"{env.prefix}/doc.json"
    put(storage, key, b"{}", content_type="application/x-cmtest", metadata={"origin": "unit", "owner": "me"})
    reader = storage.open(key)
    reader.close()
    if storage.kind == "local":
        assert reader.content_type == mimetypes.guess_type("doc.json")[0] == "application/json"
        assert reader.metadata == {}
    else:
        assert reader.content_type == "application/x-cmtest"
        assert reader.metadata == {"origin": "unit", "owner": "me"}


def test_stat_reports_content_type_and_metadata_where_the_kind_stores_them(storage, env):
    key = f"{env.prefix}/doc.json"
    put(storage, key, b"{}", content_type="application/x-cmtest", metadata={"origin": "unit"})
    info = storage.stat(key)
    if storage.kind == "local":
        assert info.content_type == "application/json"
    else:
        assert (info.content_type, info.metadata) == ("application/x-cmtest", {"origin": "unit"})


def test_put_overwrites_an_existing_object(storage, env):
    put(storage, f"{env.prefix}/o.txt", b"first version")
    put(storage, f"{env.prefix}/o.txt", b"second")
    assert read(storage, f"{env.prefix}/o.txt") == b"second"
    assert storage.stat(f"{env.prefix}/o.txt").size == 6


def test_stat_of_a_missing_key_is_none(storage, env):
    assert storage.stat(f"{env.prefix}/missing.txt") is None


def test_stat_of_the_empty_key_is_none(storage):
    assert storage.stat("") is None


def test_open_of_a_missing_key_raises_not_found(storage, env):
    with pytest.raises(NotFound):
        storage.open(f"{env.prefix}/missing.txt")


def test_keys_with_spaces_and_unicode_round_trip(storage, env):
    key = f"{env.prefix}/with space/ünïcödé データ.txt"
    put(storage, key, "✓".encode())
    assert read(storage, key) == "✓".encode()
    assert keys(storage, f"{env.prefix}/with space") == {key}


# list and is_folder


def seed_folders(storage, p: str) -> None:
    for key in (f"{p}/dir/a.txt", f"{p}/dir/sub/b.txt", f"{p}/dir2/x.txt", f"{p}/dirfile", f"{p}/top.txt"):
        put(storage, key, key.encode())


def test_list_returns_exactly_the_objects_under_the_folder_with_full_keys(storage, env):
    p = env.prefix
    seed_folders(storage, p)
    assert keys(storage, f"{p}/dir") == {f"{p}/dir/a.txt", f"{p}/dir/sub/b.txt"}


def test_list_reports_each_objects_size(storage, env):
    p = env.prefix
    seed_folders(storage, p)
    assert {i.key: i.size for i in storage.list(f"{p}/dir")} == {
        f"{p}/dir/a.txt": len(f"{p}/dir/a.txt"), f"{p}/dir/sub/b.txt": len(f"{p}/dir/sub/b.txt")}


def test_list_of_a_missing_folder_is_empty(storage, env):
    assert list(storage.list(f"{env.prefix}/nothing")) == []


def test_list_of_a_file_key_is_empty(storage, env):
    put(storage, f"{env.prefix}/file.txt", b"x")
    assert list(storage.list(f"{env.prefix}/file.txt")) == []


def test_list_of_the_root_includes_every_object(storage, env):
    p = env.prefix
    seed_folders(storage, p)
    assert {f"{p}/dir/a.txt", f"{p}/dir2/x.txt", f"{p}/top.txt"} <= keys(storage, "")


# A folder name sorts before '/' on disk and after '-' and '.' in S3: the listing must be in key
# order all the same, since a resumed transfer lists on from a key and --sync merges two listings.
ORDERED = ["a-b", "a.b", "a/x", "a/y/z", "a0", "b", "é/1"]


def test_list_is_in_key_order_whatever_the_names(storage, env):
    p = env.prefix
    for name in reversed(ORDERED):
        put(storage, f"{p}/o/{name}", name.encode())
    assert [info.key for info in storage.list(f"{p}/o")] == [f"{p}/o/{name}" for name in ORDERED]


@pytest.mark.parametrize("after", ["a-b", "a/", "a/x", "a/y", "a/y/z", "a0", "é/1", "0"])
def test_list_after_a_key_gives_exactly_the_keys_beyond_it(storage, env, after):
    p = env.prefix
    for name in ORDERED:
        put(storage, f"{p}/o/{name}", name.encode())
    assert [info.key for info in storage.list(f"{p}/o", after=f"{p}/o/{after}")] == [
        f"{p}/o/{name}" for name in ORDERED if name > after]


def test_pages_list_on_from_any_cursor_to_the_same_objects(storage, env, monkeypatch):
    """Pages of two (the page size is lowered here; Azure's pages are the service's, by marker):
    listing on from each page's cursor gives exactly the objects after that page."""
    from cloudmesh.transfer.providers import azureblob, base
    monkeypatch.setattr(base, "LIST_PAGE", 2)
    monkeypatch.setattr(azureblob, "LIST_PAGE", 2)
    p = env.prefix
    for name in ORDERED:
        put(storage, f"{p}/o/{name}", name.encode())
    pages = list(storage.pages(f"{p}/o"))
    assert [info.key for page, _ in pages for info in page] == [f"{p}/o/{name}" for name in ORDERED]
    assert max(len(page) for page, _ in pages) == 2 and pages[-1][1] is None
    for number, (_, cursor) in enumerate(pages[:-1]):
        rest = [info.key for page, _ in storage.pages(f"{p}/o", cursor) for info in page]
        assert rest == [info.key for page, _ in pages[number + 1:] for info in page]


def test_is_folder_is_true_only_for_folders_holding_objects(storage, env):
    p = env.prefix
    seed_folders(storage, p)
    assert storage.is_folder(f"{p}/dir") and storage.is_folder(f"{p}/dir/sub") and storage.is_folder("")
    assert not storage.is_folder(f"{p}/di")
    assert not storage.is_folder(f"{p}/dir/a.txt")
    assert not storage.is_folder(f"{p}/nothing")


# delete


def test_delete_removes_the_object(storage, env):
    put(storage, f"{env.prefix}/gone.txt", b"bye")
    put(storage, f"{env.prefix}/stays.txt", b"hi")
    storage.delete(f"{env.prefix}/gone.txt")
    assert storage.stat(f"{env.prefix}/gone.txt") is None
    assert keys(storage, env.prefix) == {f"{env.prefix}/stays.txt"}
    with pytest.raises(NotFound):
        storage.open(f"{env.prefix}/gone.txt")


def test_a_delete_with_the_etag_of_an_older_version_keeps_the_object(storage, env):
    """A delete conditional on the version read refuses (Changed) once the object was rewritten."""
    key = f"{env.prefix}/versioned.txt"
    put(storage, key, b"first version")
    old = storage.stat(key).etag
    put(storage, key, b"second version")
    with pytest.raises(Changed):
        storage.delete(key, etag=old)
    assert read(storage, key) == b"second version"
    storage.delete(key, etag=storage.stat(key).etag)
    assert storage.stat(key) is None


# multi-part uploads


def two_parts(storage) -> tuple[bytes, bytes]:
    """A first part as large as the kind requires of a non-last part, and a short last part."""
    return os.urandom(max(storage.min_part_size, 1024)), os.urandom(777)


def test_multipart_upload_assembles_parts_in_order_even_when_sent_out_of_order(storage, env):
    key = f"{env.prefix}/parts.bin"
    first, last = two_parts(storage)
    data = first + last
    upload = storage.begin(key, shaped(data, content_type="application/x-cmtest", metadata={"origin": "parts"}))
    upload.put_part(2, len(first), last, hashlib.md5(last).digest())
    upload.put_part(1, 0, first, hashlib.md5(first).digest())
    upload.complete(hashlib.md5(data).digest())
    assert read(storage, key) == data
    info = storage.stat(key)
    assert info.size == len(data)
    # A multipart S3 ETag is not an MD5, so S3 reports none; Azure commits the whole MD5, as memory keeps it.
    assert info.md5 == (hashlib.md5(data).hexdigest() if storage.kind in ("azureblob", "memory") else None)


def test_multipart_upload_keeps_content_type_and_metadata_where_the_kind_stores_them(storage, env):
    key = f"{env.prefix}/parts.json"
    first, last = two_parts(storage)
    upload = storage.begin(key, shaped(first + last, content_type="application/x-cmtest", metadata={"origin": "p"}))
    upload.put_part(1, 0, first, hashlib.md5(first).digest())
    upload.put_part(2, len(first), last, hashlib.md5(last).digest())
    upload.complete(hashlib.md5(first + last).digest())
    info = storage.stat(key)
    if storage.kind == "local":
        assert info.content_type == "application/json"  # guessed from the name
    else:
        assert (info.content_type, info.metadata) == ("application/x-cmtest", {"origin": "p"})


def test_an_upload_not_yet_completed_is_invisible(storage, env):
    key = f"{env.prefix}/pending/obj.bin"
    first, last = two_parts(storage)
    upload = storage.begin(key, shaped(first + last))
    try:
        upload.put_part(1, 0, first, hashlib.md5(first).digest())
        upload.put_part(2, len(first), last, hashlib.md5(last).digest())
        assert storage.stat(key) is None
        assert list(storage.list(f"{env.prefix}/pending")) == []
        assert key not in keys(storage, "")
    finally:
        upload.abort()


def test_an_aborted_upload_leaves_nothing_at_the_key(storage, env):
    key = f"{env.prefix}/aborted/obj.bin"
    first, last = two_parts(storage)
    upload = storage.begin(key, shaped(first + last))
    upload.put_part(1, 0, first, hashlib.md5(first).digest())
    upload.put_part(2, len(first), last, hashlib.md5(last).digest())
    upload.abort()
    assert storage.stat(key) is None
    assert list(storage.list(f"{env.prefix}/aborted")) == []
    with pytest.raises(NotFound):
        storage.open(key)


def test_an_aborted_upload_keeps_the_previous_object(storage, env):
    key = f"{env.prefix}/keep.txt"
    put(storage, key, b"original")
    first, last = two_parts(storage)
    upload = storage.begin(key, shaped(first + last))
    upload.put_part(1, 0, first, hashlib.md5(first).digest())
    upload.abort()
    assert read(storage, key) == b"original"


def test_s3_abort_discards_the_uploaded_parts(env):
    storage, key = build(env, "awss3"), f"{env.prefix}/discard.bin"
    upload = storage.begin(key, shaped(b"abc"))
    upload.put_part(1, 0, b"abc", hashlib.md5(b"abc").digest())

    def pending():
        return env.s3.list_multipart_uploads(Bucket=storage.bucket, Prefix=key).get("Uploads", [])

    assert len(pending()) == 1
    upload.abort()
    assert pending() == []


# resumable uploads (the optional Resumable capability, on every kind that has it)


def stored_parts(storage, key: str) -> int:
    """How many parts of unfinished uploads the target still stores for `key` (what costs money)."""
    if storage.kind == "awss3":
        uploads = storage.client.list_multipart_uploads(Bucket=storage.bucket, Prefix=key).get("Uploads", [])
        return sum(len(storage.client.list_parts(Bucket=storage.bucket, Key=key, UploadId=u["UploadId"])
                       .get("Parts", [])) for u in uploads)
    if storage.kind == "azureblob":
        blobs = storage.container.list_blobs(name_starts_with=key, include=["uncommittedblobs"])
        if not any(b.name == key for b in blobs):
            return 0
        return len(storage.container.get_blob_client(key).get_block_list("uncommitted")[1])
    return sum(1 for p in storage.path(key).parent.glob(".*.cmtransfer.partial"))


def test_a_resumed_upload_lists_the_parts_already_stored_and_completes_with_them(resumable, env):
    storage = resumable
    key = f"{env.prefix}/resumed.bin"
    first, last = two_parts(storage)
    upload = storage.begin(key, shaped(first + last))
    upload.put_part(1, 0, first, hashlib.md5(first).digest())
    again = storage.resume_upload(key, shaped(first + last), upload.token, {})
    if storage.kind == "local":
        assert again is None  # a partial file cannot tell which parts it holds: begin afresh
        storage.discard_upload(key, upload.token)
        assert stored_parts(storage, key) == 0
        return
    assert set(again.uploaded) == {1} and again.uploaded[1].size == len(first)
    assert again.uploaded[1].md5 in (None, hashlib.md5(first).hexdigest())
    again.keep(1, first)
    again.put_part(2, len(first), last, hashlib.md5(last).digest())
    again.complete(hashlib.md5(first + last).digest())
    assert read(storage, key) == first + last


def test_discard_upload_removes_the_stored_parts_and_leaves_the_key_empty(resumable, env):
    storage = resumable
    key = f"{env.prefix}/discarded.bin"
    first, _ = two_parts(storage)
    upload = storage.begin(key, shaped(first))
    upload.put_part(1, 0, first, hashlib.md5(first).digest())
    assert stored_parts(storage, key) >= 1
    storage.discard_upload(key, upload.token)
    assert stored_parts(storage, key) == 0
    assert storage.stat(key) is None


def test_discard_upload_of_an_upload_already_gone_is_harmless(resumable, env):
    storage = resumable
    key = f"{env.prefix}/gone.bin"
    upload = storage.begin(key, shaped(b"abc"))
    upload.put_part(1, 0, b"abc", hashlib.md5(b"abc").digest())
    upload.abort()
    storage.discard_upload(key, upload.token)
    assert storage.stat(key) is None


def test_a_resumed_upload_that_is_gone_begins_afresh(env):
    storage = build(env, "awss3")
    key = f"{env.prefix}/never.bin"
    upload = storage.begin(key, shaped(b"abc"))
    upload.abort()
    assert storage.resume_upload(key, shaped(b"abc"), upload.token, {}) is None


def test_an_s3_upload_completed_by_a_run_that_died_before_recording_it_is_recognised(env):
    """S3 forgets a completed upload; its object's ETag, made from the recorded part MD5s, says
    that it was ours, so a resume verifies the parts again instead of uploading them."""
    storage, key = build(env, "awss3"), f"{env.prefix}/completed.bin"
    first, last = two_parts(storage)
    upload = storage.begin(key, shaped(first + last))
    upload.put_part(1, 0, first, hashlib.md5(first).digest())
    upload.put_part(2, len(first), last, hashlib.md5(last).digest())
    upload.complete(hashlib.md5(first + last).digest())
    recorded = {1: hashlib.md5(first).hexdigest(), 2: hashlib.md5(last).hexdigest()}

    again = storage.resume_upload(key, shaped(first + last), upload.token, recorded)
    assert {n: part.md5 for n, part in again.uploaded.items()} == recorded
    again.keep(1, first)
    again.keep(2, last)
    again.complete(hashlib.md5(first + last).digest())
    assert read(storage, key) == first + last

    other = {**recorded, 2: hashlib.md5(b"other bytes").hexdigest()}
    assert storage.resume_upload(key, shaped(first + last), upload.token, other) is None


@pytest.mark.parametrize("kind", ["awss3", "azure"])
def test_reading_on_after_the_object_changed_is_refused_by_its_etag(env, kind):
    """A broken download goes on pinned to the ETag it began with; another version is an error
    that says so, never a mix of two versions."""
    storage, key = build(env, kind), f"{env.prefix}/changing.bin"
    put(storage, key, b"first version")
    etag = storage.stat(key).etag
    put(storage, key, b"second version")
    with pytest.raises(TransferError, match="changed while it was being read"):
        storage.get(key, 3, None, etag if etag.startswith('"') else f'"{etag}"')


def test_discarding_azure_blocks_beside_an_existing_blob_keeps_the_blob(env):
    storage, key = build(env, "azure"), f"{env.prefix}/existing.bin"
    put(storage, key, b"committed")
    upload = storage.begin(key, shaped(b"new bytes"))
    upload.put_part(1, 0, b"new bytes", hashlib.md5(b"new bytes").digest())
    storage.discard_upload(key, upload.token)
    assert read(storage, key) == b"committed"


def test_local_discard_upload_refuses_a_token_that_is_not_a_partial_file(env):
    storage = build(env, "local")
    put(storage, f"{env.prefix}/victim.txt", b"keep me")
    with pytest.raises(UsageError):
        storage.discard_upload(f"{env.prefix}/x", "victim.txt")
    assert read(storage, f"{env.prefix}/victim.txt") == b"keep me"


def test_local_aborted_upload_leaves_no_partial_file(env):
    storage = build(env, "local")
    upload = storage.begin(f"{env.prefix}/obj.bin", shaped(b"abc"))
    upload.put_part(1, 0, b"abc", hashlib.md5(b"abc").digest())
    upload.abort()
    assert [p for p in (env.local / env.prefix).rglob("*") if p.is_file()] == []


# check_key


@pytest.mark.parametrize("key", ["a/../b", "..", "/abs/path", "a\\b", "a\x00b", "a//b", "./a"])
def test_local_check_key_rejects_unsafe_names(env, key):
    with pytest.raises(UsageError):
        build(env, "local").check_key(key)


@pytest.mark.parametrize("key", ["dir/name.", "dir/", "a\\b"])
def test_azure_check_key_rejects_names_azure_cannot_store(env, key):
    with pytest.raises(UsageError):
        build(env, "azure").check_key(key)


@pytest.mark.parametrize("key", ["dst/bad/../../escape.txt", "dst/./name.txt"])
def test_azure_check_key_rejects_dot_segments_the_http_stack_would_rewrite(env, key):
    """The request for such a name goes to another URL than the one signed (or meant): refuse it up front."""
    with pytest.raises(UsageError):
        build(env, "azure").check_key(key)


def test_local_check_key_rejects_a_component_longer_than_255_bytes(env):
    with pytest.raises(UsageError, match="255 bytes"):
        build(env, "local").check_key("dir/" + "n" * 256)


def test_s3_check_key_accepts_names_only_local_disk_refuses(env):
    s3 = build(env, "awss3")
    for key in ("a/../b", "name.", "a\\b"):
        s3.check_key(key)  # raises on failure


def test_check_key_rejects_the_empty_name_and_nul_on_every_kind(storage):
    for key in ("", "a\x00b"):
        with pytest.raises(UsageError):
            storage.check_key(key)


def test_check_key_accepts_a_name_of_exactly_max_key_bytes(storage):
    storage.check_key(long_key(storage.max_key_bytes))


def test_check_key_rejects_a_name_longer_than_max_key_bytes(storage):
    with pytest.raises(UsageError, match="longer than"):
        storage.check_key(long_key(storage.max_key_bytes + 1))


def test_check_key_counts_utf8_bytes_not_characters(storage):
    segments = storage.max_key_bytes // 201 + 1
    key = "/".join(["é" * 100] * segments)  # fewer characters than the limit, more bytes
    assert len(key) <= storage.max_key_bytes < len(key.encode())
    with pytest.raises(UsageError, match="longer than"):
        storage.check_key(key)


def test_check_key_accepts_ordinary_names(storage):
    storage.check_key("folder/sub folder/ünïcödé file.txt")


# local storage stays inside its root


@pytest.fixture
def outside(env):
    folder = env.local.parent / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_bytes(b"do not touch")
    (env.local / "escape").symlink_to(folder, target_is_directory=True)
    (env.local / "link.txt").symlink_to(folder / "secret.txt")
    return folder


def test_local_path_refuses_a_symlinked_folder_leading_outside_the_root(env, outside):
    with pytest.raises(UsageError, match="outside"):
        build(env, "local").path("escape/new.txt")


def test_local_begin_through_a_symlinked_folder_writes_nothing_outside(env, outside):
    with pytest.raises(UsageError):
        build(env, "local").begin("escape/new.txt", shaped(b"x"))
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_local_put_refuses_to_overwrite_a_file_outside_through_a_symlink(env, outside):
    with pytest.raises(UsageError):
        put(build(env, "local"), "link.txt", b"overwritten")
    assert (outside / "secret.txt").read_bytes() == b"do not touch"


def test_local_delete_refuses_a_symlinked_path_leading_outside(env, outside):
    with pytest.raises(UsageError):
        build(env, "local").delete("escape/secret.txt")
    assert (outside / "secret.txt").exists()


def test_local_path_of_an_ordinary_key_is_under_the_root(env):
    storage = build(env, "local")
    assert storage.path("a/b.txt") == storage.root / "a" / "b.txt"


# configuration problems surface as clear errors


def test_s3_storage_with_a_missing_bucket_raises_not_found_naming_it_from_stat(env):
    env.add_storage("nobucket", "awss3", bucket="no-such-bucket")
    with pytest.raises(NotFound, match="bucket 'no-such-bucket'"):
        build(env, "nobucket").stat("any/key.txt")


def test_s3_storage_with_a_missing_bucket_raises_not_found_naming_it_from_list(env):
    env.add_storage("nobucket", "awss3", bucket="no-such-bucket")
    with pytest.raises(NotFound, match="bucket 'no-such-bucket'"):
        list(build(env, "nobucket").list("any"))


def test_azure_storage_with_a_missing_container_raises_not_found_naming_it(env):
    env.add_storage("nocontainer", "azure", container="no-such-container")
    with pytest.raises(NotFound, match="container 'no-such-container'"):
        build(env, "nocontainer").stat("any/key.txt")


def test_azure_storage_with_a_wrong_account_key_raises_config_error(env):
    env.add_storage("badkey", "azure", account_key=base64.b64encode(b"not the key" * 6).decode())
    with pytest.raises(ConfigError, match="rejected its credentials"):
        build(env, "badkey").stat("any/key.txt")
