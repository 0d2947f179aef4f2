"""Every limit and default that bounds what one request, command or process may ask for, in one place."""
MiB = 1024 * 1024

MAX_PARALLEL = 64  # parts in flight per transfer
MAX_RETRIES = 20
MIN_CHUNK = 1 * MiB
MAX_CHUNK = 4000 * MiB
MEMORY_BUDGET = 2048 * MiB  # parallel x part size, per transfer and summed over a service's transfers

# The transfer records (records/sqlite.py): how long a write waits while another process holds them
# locked. The command waits long (a transfer should not fail on a moment's contention); the REST
# service less, since a waiting request holds a worker and the service's one connection.
# $CMS_TRANSFER_RECORDS_WAIT (seconds, from 0 to MAX_RECORDS_WAIT) replaces either.
RECORDS_WAIT = 30.0
SERVICE_RECORDS_WAIT = 5.0
MAX_RECORDS_WAIT = 3600.0

# YAML read from cloudmesh.yaml and transfer config files (config.read_yaml).
MAX_YAML_BYTES = 1 * MiB
MAX_YAML_DEPTH = 100  # nested mappings and lists
MAX_YAML_ALIAS_NODES = 10_000  # nodes that aliases may add by repeating what their anchors name
