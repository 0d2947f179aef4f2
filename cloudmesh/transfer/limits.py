"""Every limit and default that bounds what one request, command or process may ask for, in one place."""
MiB = 1024 * 1024

# A transfer's options (options.TransferConfig): defaults and bounds.
DEFAULT_PARALLEL = 8  # parts in flight per transfer (and twice as many objects)
MAX_PARALLEL = 64
DEFAULT_CHUNK = 8 * MiB  # the part size
MIN_CHUNK = 1 * MiB
MAX_CHUNK = 4000 * MiB
DEFAULT_RETRIES = 4  # tries of a request after its first
MAX_RETRIES = 20
MEMORY_BUDGET = 2048 * MiB  # parallel x part size, per transfer and summed over a service's transfers
MEMORY_VARIABLE = "CMS_TRANSFER_MEMORY"  # a size that replaces MEMORY_BUDGET

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

# Logging (logs.py): configured secrets at least this long are masked wherever a log line holds
# them; shorter values would mask ordinary words.
MIN_MASKED_SECRET = 6

# The in-memory storage's generated objects (providers/memory.py): `generate: N` of `size: BYTES`.
MAX_GENERATED = 10**8  # their keys have 8 digits, so that sorted order is numeric order
GENERATED_SIZE = 1024
MAX_GENERATED_SIZE = 64 * MiB

# The REST service (service/app.py).
MAX_BODY = 64 * 1024  # bytes of a request body
MAX_JSON_DEPTH = 32  # nested objects and arrays in a request body (the contract needs 3)
MAX_JSON_DIGITS = 100  # digits of a whole number in a request body
MAX_RUNNING = 4  # transfers one service runs at once
REQUEST_HEADER_TIMEOUT = 10.0  # seconds from a connection (or a request's first byte) to its headers' end
REQUEST_BODY_TIMEOUT = 20.0  # seconds from the headers' end to the body's end
RECORDS_RETRY_AFTER = 5  # seconds, the Retry-After of a 503 answered while the records are locked

# Group commit of object updates (records/batch.py): written every so many objects or seconds.
BATCH_OBJECTS = 500
BATCH_SECONDS = 0.1

# Listing (providers/base.py `pages`, pipeline.py): objects listed, planned and recorded together.
# A transfer holds about one page at a time whatever the size of its source, and a resumed one
# lists on from the last page it recorded.
LIST_PAGE = 1000

# A transfer spread over a Dask cluster (cluster.py); the batch sizes are chosen by the model of
# benchmarks/cluster.py, which keeps the scheduler's cost per object far below 1 ms.
CLUSTER_BATCH_OBJECTS = 100  # objects in one task at most
CLUSTER_BATCH_BYTES = 256 * MiB  # bytes of the objects in one task at most
CLUSTER_SPREAD_PARTS = 4  # an object of more parts than this is spread over the cluster
CLUSTER_TASK_PARTS = 16  # parts per task of a spread object at most (fewer, to give every worker thread two)
CLUSTER_TASKS_PER_THREAD = 2  # tasks in flight per worker thread: enough to keep each busy, few to redo
CLUSTER_SPREAD = 2  # objects being spread over the cluster at once
MAX_LOCAL_WORKERS = 64  # worker processes `workers` starts on this host
CLUSTER_CONNECT = 10.0  # seconds to reach the scheduler
CLUSTER_GONE = 20.0  # seconds without the scheduler before the transfer fails (to resume later)

# Progress samples (sampling.py): what the dashboard plots throughput over time from. A running
# transfer records one every SAMPLE_EVERY seconds; past SAMPLES_MAX, every other one is dropped and
# the interval doubles, so a run keeps evenly spaced samples however long it runs.
SAMPLE_EVERY = 1.0
SAMPLES_MAX = 600
STATISTIC_DAYS = 30  # days of bytes per day in `statistic`, up to today

# The dashboard (service/ui, at /ui) and the REST operations it needs.
PREVIEW_ROWS = 1000  # rows of a dry-run preview at most (a preview answers while the request waits)
BROWSE_ROWS = 1000  # entries of one folder listing at most
