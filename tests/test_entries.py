"""One folder level (Storage.entries and `cms transfer list` without -r): the same files and
sub-folders on every kind, in key order and without folder markers, read one level deep on S3
(moto) and Azure (Azurite) however much lies below, and `Storages.list(..., limit=N)` stopping at N."""
import json
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.storage.blob import BlobBlock

import emulators as emu
from cloudmesh.transfer.providers import Folder, ObjectInfo, Storage
from cloudmesh.transfer.storages import Storages
from test_faults import proxied
from test_local_hardening import config_inside_the_root
from test_providers import build, put, storage  # noqa: F401  (storage: the fixture over every kind)

FILES = ["top.txt", "a-b.txt", "dir.txt", "dir0", "é.txt", "link.txt", "a b/ü.txt", "a b/deeper/x.txt",
         "dir/file.txt", "dir/sub/deep/y.txt", "データ/z.txt"]
BLOCKS = ["dir/file.txt", "a b/ü.txt"]  # committed from staged blocks on Azure (no Content-MD5)
EXPECTED = {  # what entries gives on every kind: (folder or file, name in the folder)
    "": [("folder", "a b"), ("file", "a-b.txt"), ("file", "dir.txt"), ("folder", "dir"), ("file", "dir0"),
         ("file", "link.txt"), ("file", "top.txt"), ("file", "é.txt"), ("folder", "データ")],
    "dir": [("file", "file.txt"), ("folder", "sub")],
    "a b": [("folder", "deeper"), ("file", "ü.txt")],
    "empty": [],  # folder markers only (on local disk, an empty folder)
    "hollow": [],  # folder markers, or empty folders, in folders
}


def content(name: str) -> bytes:
    """A file's bytes; link.txt is, on local disk, a symlink to top.txt, so it holds the same bytes."""
    return b"top.txt" if name == "link.txt" else name.encode()


def seed(storage, env, p: str) -> None:
    """FILES under `p`, and the folder markers each kind has, written as other tools write them."""
    if storage.kind == "awss3":
        for name in FILES:
            env.s3.put_object(Bucket=emu.BUCKET, Key=f"{p}/{name}", Body=content(name))
        for marker in ("", "dir/", "empty/", "hollow/", "hollow/inner/"):  # as the S3 console makes folders
            env.s3.put_object(Bucket=emu.BUCKET, Key=f"{p}/{marker}", Body=b"")
    elif storage.kind == "azureblob":
        for name in FILES:
            if name in BLOCKS:
                blob = env.azure.get_blob_client(f"{p}/{name}")
                blob.stage_block("b1", content(name)[:3])
                blob.stage_block("b2", content(name)[3:])
                blob.commit_block_list([BlobBlock("b1"), BlobBlock("b2")])
            else:
                env.azure.upload_blob(f"{p}/{name}", content(name), overwrite=True)
        for marker in ("dir", "empty", "hollow/inner"):  # as ADLS Gen2 and the portal make folders
            env.azure.upload_blob(f"{p}/{marker}", b"", metadata={"hdi_isfolder": "true"}, overwrite=True)
        env.azure.upload_blob(f"{p}/hollow/", b"", overwrite=True)  # an S3-style marker copied over
    elif storage.kind == "local":
        root = env.local / p
        for name in FILES:
            if name != "link.txt":
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(content(name))
        (root / "link.txt").symlink_to("top.txt")
        (root / "linkdir").symlink_to("dir")  # a symlinked folder, which listings never descend into
        (root / "empty").mkdir()
        (root / "hollow" / "inner").mkdir(parents=True)
        (root / ".top.txt.0123abcd.cmtransfer.partial").write_bytes(b"half")
        (root / "dir" / ".file.txt.0123abcd.cmtransfer.partial").write_bytes(b"half")
    else:
        for name in FILES:
            put(storage, f"{p}/{name}", content(name))


def shown(entries, p: str, folder: str) -> list[tuple[str, str]]:
    """Entries of `p/folder` as EXPECTED has them, each key checked to lie directly in that folder."""
    start = f"{p}/{folder}/" if folder else f"{p}/"
    assert all(entry.key.startswith(start) and "/" not in entry.key[len(start):] for entry in entries)
    return [("folder" if isinstance(entry, Folder) else "file", entry.key[len(start):]) for entry in entries]


def collapsed(rows: list[dict]) -> list[dict]:
    """A recursive listing's rows as one level, the way `cms transfer list` computed them before
    `entries`: a folder's row where its first object was."""
    out, folders = [], set()
    for row in rows:
        if "/" not in row["name"]:
            out.append(row)
        elif (folder := row["name"].split("/", 1)[0] + "/") not in folders:
            folders.add(folder)
            out.append({"name": folder, "size": None, "modified": None, "md5": None})
    return out


@pytest.fixture
def storages(env, monkeypatch) -> Storages:
    monkeypatch.setenv("CLOUDMESH_CONFIG_DIR", str(env.config_dir))
    return Storages()


def test_entries_give_the_same_files_and_folders_on_every_kind_in_key_order(storage, env):
    p = env.prefix
    seed(storage, env, p)
    for folder, expected in EXPECTED.items():
        prefix = f"{p}/{folder}" if folder else p
        entries = list(storage.entries(prefix))
        assert shown(entries, p, folder) == expected, (storage.kind, folder)
        assert entries == list(Storage.entries(storage, prefix)), "the override differs from the generic one"
        for entry in entries:
            if isinstance(entry, ObjectInfo):
                name = entry.key[len(p) + 1:]
                assert entry.size == len(content(name)), name
    assert list(storage.entries(f"{p}/missing")) == []


def test_entries_of_the_root_name_top_level_folders(storage, env):
    seed(storage, env, env.prefix)
    root = list(storage.entries(""))
    assert Folder(env.prefix) in root
    assert all("/" not in entry.key for entry in root)


def test_list_without_r_gives_the_rows_it_gave_before_entries(storage, env, storages):
    """The rows equal those computed the old way, from the recursive listing."""
    p = env.prefix
    seed(storage, env, p)
    for folder in ("", "dir", "a b"):
        target = f"{storage.name}:{p}/{folder}" if folder else f"{storage.name}:{p}"
        rows = storages.list(target)
        assert rows == collapsed(storages.list(target, recursive=True))
        assert [row["name"] for row in rows] == [f"{n}/" if kind == "folder" else n for kind, n in EXPECTED[folder]]
    single = storages.list(f"{storage.name}:{p}/top.txt")
    assert single == storages.list(f"{storage.name}:{p}/top.txt", recursive=True)
    assert [row["name"] for row in single] == ["top.txt"]


def test_cms_transfer_list_shows_one_level_without_markers(env):
    seed(build(env, "awss3"), env, env.prefix)
    shallow, deep = (env.transfer("list", f"--target=awss3:{env.prefix}", "--output=json", *r) for r in ([], ["-r"]))
    assert shallow.returncode == deep.returncode == 0, shallow.stderr + deep.stderr
    rows = json.loads(shallow.stdout)
    assert rows == collapsed(json.loads(deep.stdout))
    assert [row["name"] for row in rows] == [f"{n}/" if kind == "folder" else n for kind, n in EXPECTED[""]]


@pytest.mark.parametrize("limit", [0, 1, 2, 5, 9, 10, None])
def test_list_with_a_limit_gives_the_first_rows(storage, env, storages, limit):
    seed(storage, env, env.prefix)
    full = storages.list(f"{storage.name}:{env.prefix}")
    assert len(full) == len(EXPECTED[""])
    assert storages.list(f"{storage.name}:{env.prefix}", limit=limit) == full[:limit]


# Reading one level: every listing request the storage sends, as the fault proxy sees it.


def listings(proxy) -> list[dict]:
    """The query of each listing request through `proxy` (S3 ListObjectsV2, Azure List Blobs)."""
    queries = [parse_qs(urlsplit(event.path).query) for event in proxy.log]
    return [q for q in queries if "list-type" in q or q.get("comp") == ["list"]]


def page_size(query: dict) -> int | None:
    size = query.get("max-keys") or query.get("maxresults")
    return int(size[0]) if size else None


def fill(env, kind: str, keys: list[str]) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: env.put(kind, key, b"x"), keys))


@pytest.mark.parametrize("kind", ["awss3", "azure"])
def test_entries_read_one_level_however_much_lies_below(env, kind):
    """1200 objects under big/ (more than a page of a recursive listing): entries sends one
    listing delimited by '/', at this folder only, and one request for two keys per sub-folder."""
    p = env.prefix
    fill(env, kind, [f"{p}/big/{i % 7}/{i:04d}.bin" for i in range(1200)] + [f"{p}/one.txt", f"{p}/small/x"])
    with proxied(env, kind, "counted") as proxy:
        storage = build(env, "counted")
        entries = list(storage.entries(p))
        one_level = listings(proxy)
        proxy.reset_counters()
        assert len(list(storage.list(p))) == 1202
        recursive = listings(proxy)
    assert shown(entries, p, "") == [("folder", "big"), ("file", "one.txt"), ("folder", "small")]
    assert len(recursive) >= 2, "the subtree fits a page: it does not tell one level from a recursive listing"
    first, *checks = one_level
    assert first["delimiter"] == ["/"] and first["prefix"] == [f"{p}/"]
    assert [(q["prefix"], page_size(q), "delimiter" in q) for q in checks] == [
        ([f"{p}/big/"], 2, False), ([f"{p}/small/"], 2, False)]


@pytest.mark.parametrize("kind", ["awss3", "azure"])
def test_list_with_a_limit_stops_listing_at_the_limit(env, storages, kind):
    """Ten sub-folders: with limit=3 only the first three are looked into, not all ten."""
    p = env.prefix
    fill(env, kind, [f"{p}/f{i}/x" for i in range(10)])
    with proxied(env, kind, "counted") as proxy:
        rows = storages.list(f"counted:{p}", limit=3)
        limited = listings(proxy)
        proxy.reset_counters()
        full = storages.list(f"counted:{p}")
        unlimited = listings(proxy)
    assert rows == full[:3] == [{"name": f"f{i}/", "size": None, "modified": None, "md5": None} for i in range(3)]
    assert (len(limited), len(unlimited)) == (1 + 3, 1 + 10)


def test_local_entries_leave_out_the_config_directory_and_symlinked_folders(env, storages):
    """A root that holds the cloudmesh config directory: entries show the other folder, not it,
    nor the symlinked folder that leads to it."""
    config_inside_the_root(env)
    home = storages.storage("home")
    assert list(home.entries("")) == [Folder("local")]
    assert [entry.key for entry in home.entries(f"local/{env.prefix}")] == [f"local/{env.prefix}/mine.txt"]
