"""Unit tests of the pure parts: locations, sizes, part sizing, config loading and masking (the records'
contract is tests/test_records.py)."""
import math
import random
from pathlib import Path

import pytest
import yaml
from azure.storage.blob import BlobServiceClient

from cloudmesh.transfer import location
from cloudmesh.transfer.config import MASK, load_storages, masked
from cloudmesh.transfer.engine import part_size, read_exact
from cloudmesh.transfer.options import TransferConfig, parse_bool, parse_size
from cloudmesh.transfer.providers import Reader
from cloudmesh.transfer.errors import ConfigError, OptionError, TransferError, UsageError
from cloudmesh.transfer.limits import MAX_PARALLEL, MAX_RETRIES
from cloudmesh.transfer.location import Location
from cloudmesh.transfer.providers.awss3 import S3Storage
from cloudmesh.transfer.providers.azureblob import AzureStorage
from cloudmesh.transfer.providers.local import LocalStorage

MiB = 1024 * 1024
GiB = 1024 * MiB

# Location.parse, join, normalize_path


def test_parse_splits_storage_and_path():
    assert Location.parse("awss3:data/file.txt") == Location("awss3", "data/file.txt", folder=False)


def test_parse_marks_a_trailing_slash_as_a_folder():
    assert Location.parse("azure:data/") == Location("azure", "data", folder=True)


def test_parse_of_an_empty_path_is_the_root_folder():
    assert Location.parse("local:") == Location("local", "", folder=True)


def test_parse_normalizes_dots_and_repeated_slashes():
    assert Location.parse("local:./a//b/./c").path == "a/b/c"


def test_parse_keeps_only_the_first_colon_as_separator():
    assert Location.parse("awss3:a:b") == Location("awss3", "a:b")


@pytest.mark.parametrize("text", ["no-colon", "", None])
def test_parse_without_a_colon_is_a_usage_error(text):
    with pytest.raises(UsageError, match="STORAGE:PATH"):
        Location.parse(text)


def test_parse_without_a_storage_name_is_a_usage_error():
    with pytest.raises(UsageError, match="no storage"):
        Location.parse(":path")


@pytest.mark.parametrize("text", ["s:..", "s:a/../b", "s:a/..", "s:a\\..\\b"])
def test_parse_rejects_parent_references(text):
    with pytest.raises(UsageError, match=r"\.\."):
        Location.parse(text)


def test_parse_accepts_names_that_merely_contain_two_dots():
    assert Location.parse("s:a/..b/c..").path == "a/..b/c.."


def test_parse_rejects_nul():
    with pytest.raises(UsageError, match="NUL"):
        Location.parse("s:a\x00b")


def test_location_str_is_storage_colon_path():
    assert str(Location.parse("awss3:x/y/")) == "awss3:x/y"


def test_child_joins_a_relative_path():
    assert Location.parse("s:base/").child("sub/f.txt") == Location("s", "base/sub/f.txt")


def test_join_uses_single_slashes_and_skips_empty_parts():
    assert location.join("a/", "/b/", "", "c") == "a/b/c"
    assert location.join("", "x") == "x"
    assert location.join("", "/") == ""


def test_normalize_path_drops_empty_and_dot_parts_and_converts_backslashes():
    assert location.normalize_path("/./a//b\\c/./") == "a/b/c"
    assert location.normalize_path("") == ""


def test_basename_is_the_last_component():
    assert location.basename("a/b/c.txt") == "c.txt"
    assert location.basename("a/b/") == "b"


# parse_size and parse_bool


@pytest.mark.parametrize("text,size", [
    ("8MiB", 8 * MiB), ("5MB", 5 * MiB), ("1048576", 1048576), ("4k", 4096), ("4KiB", 4096),
    ("2G", 2 * GiB), (" 16 mib ", 16 * MiB), ("1T", 1024 * GiB), (7, 7),
])
def test_parse_size_reads_binary_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MiB", "1.5MiB", "-1", "8XB", "8 MiB extra", "eight", None])
def test_parse_size_rejects_what_is_not_a_size(text):
    with pytest.raises(UsageError, match="not a size"):
        parse_size(text)


@pytest.mark.parametrize("value", [True, "true", "Yes", " ON ", "1", 1])
def test_parse_bool_reads_true(value):
    assert parse_bool(value, "--flag") is True


@pytest.mark.parametrize("value", [False, "false", "NO", "off", "0", 0])
def test_parse_bool_reads_false(value):
    assert parse_bool(value, "--flag") is False


@pytest.mark.parametrize("value", ["maybe", "", None, "2"])
def test_parse_bool_rejects_anything_else_naming_the_option(value):
    with pytest.raises(UsageError, match="--flag"):
        parse_bool(value, "--flag")


# engine.part_size


@pytest.fixture
def s3():
    return S3Storage("s3", None, "bucket")


@pytest.fixture
def azure():
    service = BlobServiceClient("http://127.0.0.1:9/devstoreaccount1", credential=None)  # never contacted
    return AzureStorage("azure", service, "container")


def test_part_size_is_the_chunk_size_when_it_fits(s3):
    assert part_size(100 * MiB, TransferConfig(chunksize=8 * MiB), s3) == 8 * MiB


def test_part_size_respects_the_s3_minimum_of_5_mib(s3):
    assert part_size(100 * MiB, TransferConfig(chunksize=1 * MiB), s3) == 5 * MiB


def test_part_size_grows_to_stay_within_10000_s3_parts(s3):
    size = 100 * GiB
    chosen = part_size(size, TransferConfig(chunksize=8 * MiB), s3)
    assert math.ceil(size / chosen) <= 10_000
    assert chosen == 11 * MiB  # 100 GiB / 10,000 = 10.24 MiB, rounded up to whole MiB


def test_part_size_uses_exactly_10000_parts_when_that_divides_evenly(s3):
    assert part_size(10_000 * 16 * MiB, TransferConfig(chunksize=8 * MiB), s3) == 16 * MiB


def test_part_size_grows_to_stay_within_50000_azure_blocks(azure):
    assert part_size(50_000 * 8 * MiB, TransferConfig(chunksize=8 * MiB), azure) == 8 * MiB
    chosen = part_size(50_000 * 8 * MiB + 1, TransferConfig(chunksize=8 * MiB), azure)
    assert chosen == 9 * MiB and math.ceil((50_000 * 8 * MiB + 1) / chosen) <= 50_000


def test_part_size_has_no_minimum_on_azure(azure):
    assert part_size(10 * MiB, TransferConfig(chunksize=1 * MiB), azure) == 1 * MiB


def test_part_size_of_an_empty_object_is_the_chunk_size(s3):
    assert part_size(0, TransferConfig(chunksize=8 * MiB), s3) == 8 * MiB


def test_part_size_raises_when_an_object_is_too_large_for_s3(s3):
    with pytest.raises(TransferError, match="too large for storage 's3'"):
        part_size(10_000 * 5 * GiB + 1, TransferConfig(), s3)


def test_part_size_accepts_s3s_largest_object_and_refuses_one_byte_more(s3):
    assert part_size(5 * 1024 * GiB, TransferConfig(), s3) == 525 * MiB
    with pytest.raises(TransferError, match="too large"):
        part_size(5 * 1024 * GiB + 1, TransferConfig(), s3)


def test_part_size_raises_when_an_object_is_too_large_for_azure(azure):
    with pytest.raises(TransferError, match="too large"):
        part_size(50_000 * 4000 * MiB + 1, TransferConfig(), azure)


def test_part_size_for_local_disk_is_the_chunk_size(tmp_path):
    assert part_size(10 * GiB, TransferConfig(chunksize=8 * MiB), LocalStorage("l", tmp_path)) == 8 * MiB


# engine.read_exact


class ChunkedReader(Reader):
    """A reader that returns its data in the given uneven chunks, never more than asked for."""

    def __init__(self, chunks):
        self.chunks = [c for c in chunks if c]

    def read(self, size: int) -> bytes:
        if not self.chunks:
            return b""
        head = self.chunks[0][:size]
        self.chunks[0] = self.chunks[0][size:]
        if not self.chunks[0]:
            self.chunks.pop(0)
        return head


def test_read_exact_joins_short_reads_into_the_size_asked_for():
    reader = ChunkedReader([b"abc", b"defgh", b"i", b"jklmnop"])
    assert [read_exact(reader, 4) for _ in range(5)] == [b"abcd", b"efgh", b"ijkl", b"mnop", b""]


def test_read_exact_is_short_only_at_the_end_and_loses_no_data():
    rng = random.Random(1234)
    data = rng.randbytes(100_000)
    cuts = sorted(rng.sample(range(1, len(data)), 300))
    reader = ChunkedReader(data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)]))
    parts = []
    while part := read_exact(reader, 4096):
        parts.append(part)
    assert b"".join(parts) == data
    assert all(len(p) == 4096 for p in parts[:-1]) and 0 < len(parts[-1]) <= 4096


def test_read_exact_at_the_end_is_empty():
    assert read_exact(ChunkedReader([]), 4) == b""


# config.masked


def test_masked_hides_secret_fields_at_any_depth():
    config = {"storage": {"s3": {"credentials": {"secret_access_key": "S", "access_key_id": "A",
                                                 "bucket": "b", "region": "r"}},
                          "az": {"credentials": {"account_key": "K", "connection_string": "C",
                                                 "account_name": "n"}},
                          "list": [{"sas_token": "T", "password": "P", "name": "x"}]}}
    shown = masked(config)
    s3, az = shown["storage"]["s3"]["credentials"], shown["storage"]["az"]["credentials"]
    assert s3 == {"secret_access_key": MASK, "access_key_id": MASK, "bucket": "b", "region": "r"}
    assert az == {"account_key": MASK, "connection_string": MASK, "account_name": "n"}
    assert shown["storage"]["list"] == [{"sas_token": MASK, "password": MASK, "name": "x"}]


def test_masked_keeps_endpoint_url_visible():
    assert masked({"endpoint_url": "http://127.0.0.1:9000"}) == {"endpoint_url": "http://127.0.0.1:9000"}


def test_masked_hides_other_urls_which_may_carry_tokens():
    assert masked({"sas_url": "https://x/?sig=abc"}) == {"sas_url": MASK}


def test_masked_leaves_empty_secrets_visibly_empty():
    assert masked({"account_key": "", "secret": None}) == {"account_key": "", "secret": None}


def test_masked_does_not_change_its_input():
    config = {"credentials": {"account_key": "K"}}
    masked(config)
    assert config == {"credentials": {"account_key": "K"}}


# config.load_storages


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cloudmesh.yaml"
    path.write_text(text)
    return path


def test_load_storages_merges_default_and_credentials(tmp_path):
    path = write(tmp_path, "cloudmesh:\n  storage:\n    s3:\n      cm: {kind: awss3}\n"
                           "      default: {region: eu, bucket: old}\n      credentials: {bucket: new}\n")
    s3 = load_storages(path)["s3"]
    assert (s3.name, s3.kind, s3.settings) == ("s3", "awss3", {"region": "eu", "bucket": "new"})


def test_load_storages_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="not found") as error:
        load_storages(tmp_path / "absent.yaml")
    assert "absent.yaml" in str(error.value)


def test_load_storages_of_malformed_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "cloudmesh:\n  storage:\n    s3:\n      cm:\n        kind: awss3\n     bad: indent\n")
    with pytest.raises(ConfigError, match="not valid YAML at line 6"):
        load_storages(path)


def test_load_storages_without_cm_kind_names_the_storage(tmp_path):
    path = write(tmp_path, "cloudmesh:\n  storage:\n    mine:\n      credentials: {bucket: b}\n")
    with pytest.raises(ConfigError, match="storage 'mine' has no 'cm.kind'"):
        load_storages(path)


@pytest.mark.parametrize("text", ["cloudmesh: {}\n", "cloudmesh:\n  storage: {}\n", "", "other: 1\n",
                                  "- a list\n", "cloudmesh:\n  storage: [a, b]\n"])
def test_load_storages_without_a_storage_section_says_so(tmp_path, text):
    with pytest.raises(ConfigError, match="no 'cloudmesh.storage' section"):
        load_storages(write(tmp_path, text))


@pytest.mark.parametrize("text", ["cloudmesh: 5\n", "cloudmesh:\n  storage:\n    s3:\n      cm: awss3\n"])
def test_load_storages_reports_a_section_of_the_wrong_shape_as_config_error(tmp_path, text):
    """A scalar where a mapping belongs is a config problem, not an internal AttributeError."""
    with pytest.raises(ConfigError):
        load_storages(write(tmp_path, text))


def test_load_storages_with_an_entry_that_is_not_a_mapping_names_it(tmp_path):
    with pytest.raises(ConfigError, match="storage 'odd' in cloudmesh.yaml is not a mapping"):
        load_storages(write(tmp_path, "cloudmesh:\n  storage:\n    odd: just text\n"))


def test_require_names_the_missing_field_and_its_variable(tmp_path):
    s3 = load_storages(write(tmp_path, "cloudmesh:\n  storage:\n    s3:\n      cm: {kind: awss3}\n"))["s3"]
    with pytest.raises(ConfigError, match="storage 's3' has no 'bucket'"):
        s3.require("bucket")
    with pytest.raises(ConfigError, match=r"set CMTRANSFER_UNSET_VARIABLE"):
        s3.require("access_key_id", "CMTRANSFER_UNSET_VARIABLE")


# providers.http


def test_data_requests_use_the_environment_proxy_unless_no_proxy_exempts_the_host(monkeypatch):
    import urllib3

    from cloudmesh.transfer.providers import http
    proxy = urllib3.ProxyManager("http://127.0.0.1:3128")
    monkeypatch.setattr(http, "PROXIES", {"https": proxy})
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    assert http.pool("https://bucket.s3.amazonaws.com/key?X-Amz-Signature=x") is proxy
    assert http.pool("https://127.0.0.1:9000/key") is http.POOL
    assert http.pool("http://bucket.s3.amazonaws.com/key") is http.POOL


def test_after_a_doubted_claim_bytes_that_nothing_else_proves_fail_as_it_did():
    from cloudmesh.transfer.engine import Doubted, Engine
    from cloudmesh.transfer.errors import IntegrityError
    from cloudmesh.transfer.integrity import Claim, Proof, Verifier
    doubt = Doubted(IntegrityError("the bytes read of 'o' do not match the source's MD5"), Claim(Proof.MD5, "0" * 32))
    unanswered = Verifier(Claim(Proof.RANGES, segment=4, strict=True, ranges=[None]), 3, "'o'")
    unanswered.update(b"abc")
    with pytest.raises(Doubted, match="do not match the source's MD5"):
        Engine.prove(unanswered, doubt)
    alone = Verifier(Claim(Proof.RANGES, segment=4, strict=True, ranges=[None]), 3, "'o'")
    alone.update(b"abc")
    assert Engine.prove(alone, None).proof is Proof.NONE  # without a doubt it is merely unverified


def test_the_verifier_proves_empty_parts_and_refuses_parts_that_do_not_add_up():
    import hashlib
    from cloudmesh.transfer.errors import IntegrityError
    from cloudmesh.transfer.integrity import Claim, Proof, Verifier, composite_etag
    empty = hashlib.md5(b"").digest()
    assert Verifier(Claim(Proof.PARTS, composite_etag([empty]), parts=(0,)), 0, "e").finish().proof is Proof.PARTS
    data = b"0123456789"
    trailing = Verifier(Claim(Proof.PARTS, composite_etag([hashlib.md5(data).digest(), empty]), parts=(10, 0)), 10, "t")
    trailing.update(data)
    assert trailing.finish().proof is Proof.PARTS
    assert Verifier(Claim(Proof.RANGES, segment=4, strict=True), 0, "z").finish().proof is Proof.RANGES
    short = Verifier(Claim(Proof.PARTS, composite_etag([hashlib.md5(data[:5]).digest()]), parts=(5,)), 10, "s")
    short.update(data)
    with pytest.raises(IntegrityError, match="do not add up"):
        short.finish()


# TransferConfig: one source of defaults, which the REST contract repeats for its clients


def test_the_rest_contracts_defaults_are_the_transfer_configs():
    spec = yaml.safe_load((Path(location.__file__).parent / "service" / "openapi.yaml").read_text())
    options = spec["components"]["schemas"]["TransferRequest"]["properties"]
    default = TransferConfig()
    assert (options["parallel"]["default"], parse_size(options["chunksize"]["default"]),
            options["retries"]["default"]) == (default.parallel, default.chunksize, default.retries)
    assert (options["parallel"]["maximum"], options["retries"]["maximum"]) == (MAX_PARALLEL, MAX_RETRIES)


@pytest.mark.parametrize("given, option, problem", [
    ({"parallel": 0}, "parallel", "must be between 1 and 64, not 0"),
    ({"parallel": "many"}, "parallel", "must be a whole number, not 'many'"),
    ({"retries": 21}, "retries", "must be between 0 and 20, not 21"),
    ({"chunksize": "512KiB"}, "chunksize", "must be at least 1MiB"),
    ({"chunksize": "big"}, "chunksize", "'big' is not a size (for example 8MiB)"),
])
def test_a_bad_option_names_the_option_as_the_api_calls_it(given, option, problem):
    with pytest.raises(OptionError) as error:
        TransferConfig.of(**given)
    assert (error.value.option, error.value.problem, str(error.value)) == (option, problem, f"{option} {problem}")
