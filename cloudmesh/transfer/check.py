"""`check`: whether a target holds every object of a source, byte for byte (like `rclone check`).

The source's objects are planned as a copy would plan them, each is compared with the object at
its target path (compare.py: size, then the proofs both keep, reading local files where needed;
with `download`, both read whole), and the target's objects that no source object maps to are
reported as extra. The report is one dict with stable fields: counts, and one row per object that
is not the same.
"""
from dataclasses import asdict, dataclass
from enum import StrEnum

from cloudmesh.transfer.compare import Reading, compare
from cloudmesh.transfer.location import Location
from cloudmesh.transfer.planner import candidates
from cloudmesh.transfer.providers import Storage


class Finding(StrEnum):
    """How one object of a check compares."""

    SAME = "same"
    DIFFERENT = "different"  # other size or other bytes
    MISSING = "missing"  # at the source only
    EXTRA = "extra"  # at the target only
    UNPROVEN = "unproven"  # same size, but nothing both sides keep compares (read them: download)


@dataclass
class Row:
    """One object that is not the same: its path inside the checked folder, the finding and why."""

    path: str
    finding: Finding
    detail: str
    source_size: int | None = None
    target_size: int | None = None


def check(source: Storage, src: Location, target: Storage, dst: Location, recursive: bool,
          download: bool = False) -> dict:
    """Compare the objects under `src` with those under `dst`; see the module docstring."""
    reading = Reading.DOWNLOAD if download else Reading.CHEAP
    items = [item for page in candidates(source, src, target, dst, recursive) for item in page.items]
    if recursive and not (len(items) == 1 and items[0].source.key == src.path):
        present = {info.key: info for info in target.list(dst.path)}
    else:
        present = {key: info for key in {item.target_key for item in items} if (info := target.stat(key))}
    counts = dict.fromkeys(Finding, 0)
    rows = []
    for item in items:
        there = present.pop(item.target_key, None)
        if there is None:
            row = Row(item.path, Finding.MISSING, "not at the target", item.source.size)
        else:
            verdict = compare(source, item.source, target, there, reading)
            finding = Finding.UNPROVEN if verdict.same is None else Finding.SAME if verdict.same else Finding.DIFFERENT
            row = Row(item.path, finding, f"compared by {verdict.how}" if verdict.same is not None else
                      f"{verdict.how}; compare with download", item.source.size, there.size)
        counts[row.finding] += 1
        if row.finding is not Finding.SAME:
            rows.append(row)
    base = f"{dst.path}/" if dst.path else ""
    for key, info in sorted(present.items()):
        counts[Finding.EXTRA] += 1
        rows.append(Row(key[len(base):] if key.startswith(base) else key, Finding.EXTRA, "not at the source",
                        None, info.size))
    return {"source": str(src), "target": str(dst), "download": download,
            "ok": not rows, "objects_source": len(items), "objects_target": len(items) - counts[Finding.MISSING] +
            counts[Finding.EXTRA], **{finding.value: counts[finding] for finding in Finding},
            "differences": [{**asdict(row), "finding": row.finding.value} for row in rows]}
