"""Configuration: storages from cloudmesh.yaml (cloudmesh-storage format) and the transfer defaults.

A storage lives at `cloudmesh.storage.<name>` with `cm.kind` (awss3, azureblob, local), a
`credentials` mapping and, for local, `default.directory`. Each provider checks its own fields.
"""
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cloudmesh.transfer.errors import ConfigError
from cloudmesh.transfer.limits import MAX_YAML_ALIAS_NODES, MAX_YAML_BYTES, MAX_YAML_DEPTH, MiB
from cloudmesh.transfer.location import Location

SECRET_WORDS = ("key", "secret", "password", "token", "connection_string", "sas", "url")
MASK = "********"


def config_dir() -> Path:
    """The cloudmesh config directory: $CLOUDMESH_CONFIG_DIR, else ~/.cloudmesh."""
    return Path(os.environ.get("CLOUDMESH_CONFIG_DIR") or "~/.cloudmesh").expanduser()


def is_secret(name: str) -> bool:
    name = name.lower()
    return any(word in name for word in SECRET_WORDS) and name != "endpoint_url"


def masked(value):
    """A copy of a config value with every secret-looking field replaced by a mask."""
    if isinstance(value, dict):
        return {k: (MASK if is_secret(str(k)) and v not in (None, "") else masked(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


class YAMLTooLarge(yaml.YAMLError):
    """A document that nests too deeply, or whose aliases would repeat too much of it."""

    def __init__(self, problem: str, mark):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what would make a small file large once read: nesting deeper
    than MAX_YAML_DEPTH, an alias of the node that holds it, and aliases that together repeat more
    than MAX_YAML_ALIAS_NODES nodes (a "billion laughs" document of 500 bytes names 10**9 strings;
    PyYAML shares them, but every walk over the data, as masked() and str() are, expands them).
    Aliases themselves are allowed: cloudmesh writes cloudmesh.yaml with PyYAML, whose dumper
    writes one (&id001) for each value it meets twice, and people share credentials with them."""

    def __init__(self, stream):
        super().__init__(stream)
        self.depth, self.repeated, self.sizes = 0, 0, {}

    def compose_node(self, parent, index):
        """Count each node as it is composed: its size as a tree (aliases expanded), and the nodes
        that aliases repeat, so that a bomb is refused at its first alias over the limit."""
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:
                if id(target) not in self.sizes:
                    raise YAMLTooLarge(f"the alias *{event.anchor} lies inside the value it names", event.start_mark)
                self.repeated += self.sizes[id(target)]
                if self.repeated > MAX_YAML_ALIAS_NODES:
                    raise YAMLTooLarge(f"its aliases repeat more than {MAX_YAML_ALIAS_NODES} values (an alias bomb?); "
                                       "write the values out instead", event.start_mark)
            return super().compose_node(parent, index)
        self.depth += 1
        if self.depth > MAX_YAML_DEPTH:
            raise YAMLTooLarge(f"it nests more than {MAX_YAML_DEPTH} levels deep", event.start_mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        self.sizes[id(node)] = 1 + sum(self.sizes[id(child)] for child in children)
        return node


def load_yaml(text: str):
    """The one document in `text`, read by BoundedLoader (None for an empty one)."""
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: Path, what: str):
    """The YAML document of a configuration file, refused with one ConfigError when it is missing,
    larger than MAX_YAML_BYTES (read no further, so that /dev/zero does not fill memory), not
    UTF-8, not YAML, or too large once read (BoundedLoader)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} is a directory, not a file: {path}") from None
    except OSError as e:
        raise ConfigError(f"{what} {path} cannot be read: {e.strerror or e}") from None
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(f"{what} {path} is larger than {MAX_YAML_BYTES // MiB} MiB, more than any configuration "
                          "needs: check that it is the right file")
    try:
        return load_yaml(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text") from None
    except YAMLTooLarge as e:
        raise ConfigError(f"{what} {path} is refused at line {e.problem_mark.line + 1}: {e.problem}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{what} {path} is not valid YAML{where}") from None


@dataclass
class StorageConfig:
    """One configured storage: its name, kind and settings (credentials merged with defaults)."""

    name: str
    kind: str
    settings: dict = field(default_factory=dict)

    def require(self, key: str, env: str | None = None) -> str:
        """A required setting, falling back to an environment variable; a clear error if absent."""
        value = self.settings.get(key) or (os.environ.get(env) if env else None)
        if value in (None, ""):
            hint = f" (or set {env})" if env else ""
            raise ConfigError(f"storage '{self.name}' has no '{key}' in cloudmesh.yaml{hint}")
        return str(value)


def load_storages(path: Path | None = None) -> dict[str, StorageConfig]:
    """All storages of cloudmesh.yaml, by name."""
    path = path or config_dir() / "cloudmesh.yaml"
    data = read_yaml(path, "cloudmesh.yaml")
    top = data.get("cloudmesh") if isinstance(data, dict) else None
    section = top.get("storage") if isinstance(top, dict) else None
    if not isinstance(section, dict) or not section:
        raise ConfigError(f"{path} has no 'cloudmesh.storage' section")
    storages = {}
    for name, entry in section.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"storage '{name}' in cloudmesh.yaml is not a mapping")
        cm = entry.get("cm")
        kind = cm.get("kind") if isinstance(cm, dict) else None
        if not kind:
            raise ConfigError(f"storage '{name}' has no 'cm.kind' in cloudmesh.yaml")
        settings = {}
        for part in ("default", "credentials"):
            value = entry.get(part) or {}
            if not isinstance(value, dict):
                raise ConfigError(f"storage '{name}' has a '{part}' that is not a mapping in cloudmesh.yaml")
            settings.update(value)
        storages[str(name)] = StorageConfig(str(name), str(kind), settings)
    return storages


def load_cluster(path: Path | None = None) -> str | None:
    """The Dask scheduler that transfers run on by default: `cloudmesh.transfer.cluster` in
    cloudmesh.yaml, or None (they run on this host)."""
    path = path or config_dir() / "cloudmesh.yaml"
    if not path.exists():
        return None
    data = read_yaml(path, "cloudmesh.yaml")
    top = data.get("cloudmesh") if isinstance(data, dict) else None
    section = top.get("transfer") if isinstance(top, dict) else None
    address = section.get("cluster") if isinstance(section, dict) else None
    if address is not None and not isinstance(address, str):
        raise ConfigError(f"'cloudmesh.transfer.cluster' in {path} is not a scheduler address")
    return address or None


def storage_config(name: str, storages: dict[str, StorageConfig]) -> StorageConfig:
    if name not in storages:
        known = ", ".join(sorted(storages)) or "none"
        raise ConfigError(f"unknown storage '{name}' (configured: {known})")
    return storages[name]


DEFAULTS_FILE = "transfer.yaml"


def read_defaults(path: Path) -> dict:
    """Validate a transfer config file: a mapping with `source` and `target` (STORAGE:PATH)."""
    data = read_yaml(path, "transfer config file")
    if not isinstance(data, dict):
        raise ConfigError(f"transfer config file {path} must be a mapping with 'source' and 'target'")
    for key in ("source", "target"):
        if not data.get(key):
            raise ConfigError(f"transfer config file {path} has no '{key}: STORAGE:PATH'")
        Location.parse(str(data[key]))
    return data


def save_defaults(data: dict) -> Path:
    path = config_dir() / DEFAULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    return path


def load_defaults() -> dict | None:
    path = config_dir() / DEFAULTS_FILE
    return read_defaults(path) if path.exists() else None


RECORDS_KINDS = ("sqlite", "mongo")
MONGO_SECTION = "cloudmesh.data.mongo"
MONGO_UNSAFE_DBNAME = set('/\\. "$\x00')


def load_records_settings(path: Path | None = None, kind: str | None = None, mongo_url: str | None = None) -> dict:
    """Where the transfer records are kept: {"kind": "sqlite"} (the default), or {"kind": "mongo"}
    with either "url" or "host" and "port", and "dbname", "username", "password".

    The store is `kind` (an option), else $CMS_TRANSFER_RECORDS, else `cloudmesh.transfer.records`
    in cloudmesh.yaml, else SQLite; without a readable cloudmesh.yaml it is SQLite. MongoDB is reached with
    cloudmesh's own `cloudmesh.data.mongo` settings: MONGO_URL (or MONGO_URI), else MONGO_HOST,
    MONGO_PORT (27017), MONGO_USERNAME and MONGO_PASSWORD; MONGO_DBNAME (cloudmesh) unless the URL
    names a database. `mongo_url`, else $CMS_TRANSFER_MONGO_URL, replaces the URL or host and port.
    Every problem is a ConfigError of one line, and none shows a password or a URL."""
    path = path or config_dir() / "cloudmesh.yaml"
    chosen = records_kind(kind, "the records option") or \
        records_kind(os.environ.get("CMS_TRANSFER_RECORDS"), "CMS_TRANSFER_RECORDS")
    if chosen == "sqlite":
        return {"kind": "sqlite"}
    mongo_url = mongo_url or os.environ.get("CMS_TRANSFER_MONGO_URL")
    try:
        data = read_yaml(path, "cloudmesh.yaml") if path.exists() else None
    except ConfigError:
        # An unreadable file holds no setting: the records stay where they are by default, so that
        # `status` works as before (the commands that need the storages report the file).
        if chosen != "mongo":
            return {"kind": "sqlite"}
        if not mongo_url:
            raise
        data = None
    top = data.get("cloudmesh") if isinstance(data, dict) else None
    top = top if isinstance(top, dict) else {}
    if not chosen:
        section = top.get("transfer")
        if section is not None and not isinstance(section, dict):
            raise ConfigError(f"'cloudmesh.transfer' in {path} is not a mapping")
        chosen = records_kind((section or {}).get("records"), f"'cloudmesh.transfer.records' in {path}") or "sqlite"
        if chosen == "sqlite":
            return {"kind": "sqlite"}
    data_section = top.get("data")
    mongo = data_section.get("mongo") if isinstance(data_section, dict) else None
    if mongo is not None and not isinstance(mongo, dict):
        raise ConfigError(f"'{MONGO_SECTION}' in {path} is not a mapping")
    mongo = mongo or {}
    url = mongo_url or mongo.get("MONGO_URL") or mongo.get("MONGO_URI")
    if not url and not mongo:
        raise ConfigError(f"the transfer records are set to MongoDB but {path} has no '{MONGO_SECTION}' section "
                          "(or set CMS_TRANSFER_MONGO_URL)")
    settings = {"kind": "mongo", "dbname": mongo_dbname(mongo.get("MONGO_DBNAME"))}
    if url:
        if not isinstance(url, str) or not url.startswith(("mongodb://", "mongodb+srv://")):
            raise ConfigError("the MongoDB URL of the transfer records must start with mongodb:// or mongodb+srv://")
        return {**settings, "url": url}
    host = mongo.get("MONGO_HOST")
    if not isinstance(host, str) or not host.strip():
        raise ConfigError(f"'{MONGO_SECTION}' in {path} has no MONGO_HOST (or MONGO_URL)")
    port = mongo.get("MONGO_PORT", 27017)
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"MONGO_PORT in '{MONGO_SECTION}' is not a port number: {port!r}")
    username, password = mongo.get("MONGO_USERNAME") or None, mongo.get("MONGO_PASSWORD") or None
    if bool(username) != bool(password):
        missing = "MONGO_PASSWORD" if username else "MONGO_USERNAME"
        raise ConfigError(f"'{MONGO_SECTION}' in {path} has no {missing}; give both or neither")
    if password is not None and str(password) == "TBD":
        raise ConfigError(f"MONGO_PASSWORD in '{MONGO_SECTION}' is still TBD; set the MongoDB password")
    return {**settings, "host": host.strip(), "port": port,
            "username": None if username is None else str(username),
            "password": None if password is None else str(password)}


def records_kind(value, where: str) -> str | None:
    """'sqlite' or 'mongo' from a setting, None if it is not set."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    kind = str(value).strip().lower()
    if kind not in RECORDS_KINDS:
        raise ConfigError(f"{where} must be 'sqlite' or 'mongo', not {str(value)!r}")
    return kind


def mongo_dbname(value) -> str:
    if value is None or value == "":
        return "cloudmesh"
    if not isinstance(value, str) or len(value) > 63 or MONGO_UNSAFE_DBNAME & set(value):
        raise ConfigError(f"MONGO_DBNAME in '{MONGO_SECTION}' is not a MongoDB database name: {str(value)!r}")
    return value
