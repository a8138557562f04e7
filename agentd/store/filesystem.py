"""Which filesystem holds a local database, and whether it slows LanceDB's commits down.

Why: on ext4 mounted without a journal, the kernel does not reuse an inode freed in the last 60 s
(360 s while its inode-table block is not yet written back), and every file it creates first
steps over each such inode of its block group (``recently_deleted()`` in ``find_inode_bit()``).
Every LanceDB commit creates files and every version cleanup deletes them, so on such a
filesystem every commit gets slower for minutes after files were deleted: on the project's
test machine a one-row append went from 4.5 to 10.1 ms after 30,000 files were deleted, and a
profile of the daemon under a stream of actions put 15-20% of all CPU time there (README,
"Latency"). Nothing in agentd can avoid it; the supervisor says so once at start, and
``bench/control_bench.py`` prints it beside its figures.

Linux only (``/proc/mounts``; the journal's ``/proc/fs/jbd2/<device>-<n>`` entries); anywhere
else, or for an object store, the answer is "unknown" and nothing is said.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Filesystem", "filesystem_of", "parse_filesystem"]


@dataclass(frozen=True, slots=True)
class Filesystem:
    kind: str  # "ext4", "xfs", "tmpfs", ... ("unknown" when /proc says nothing)
    device: str
    mount: str
    journaled: bool | None  # ext4 only; None for other kinds

    @property
    def slow_after_deletes(self) -> bool:
        """ext4 without a journal: creating a file steps over every recently deleted inode."""
        return self.kind == "ext4" and self.journaled is False

    def describe(self) -> str:
        if self.kind != "ext4":
            return self.kind
        return "ext4 with a journal" if self.journaled else "ext4 without a journal"

    def warning(self) -> str | None:
        """What to tell the operator, or None when there is nothing to say."""
        if not self.slow_after_deletes:
            return None
        return (
            f"the database is on {self.device} ({self.mount}), ext4 mounted without a journal: there, "
            "every file created steps over the inodes deleted in the last minutes, and LanceDB creates "
            "and deletes files on every commit and cleanup, so commits slow down (by 2x after 30,000 "
            "deletions on our test machine); move the data directory to a filesystem with a journal "
            "(ext4's default, XFS)"
        )


def parse_filesystem(
    path: Path,
    mounts: str,
    journals: list[str] | None,
    name_of: Callable[[str], str] = os.path.basename,
) -> Filesystem:
    """The filesystem holding ``path``, from the text of ``/proc/mounts`` and the names listed in
    ``/proc/fs/jbd2`` (one ``<device>-<n>`` entry per journaled device; None: not readable).

    ``name_of`` turns a device path as mounted into the kernel's name for it, the one jbd2 uses
    (``/dev/mapper/vg-root`` is ``dm-0``).
    """
    target = str(path)
    best: tuple[str, str, str] | None = None  # (mount, kind, device): the longest mount point that holds path
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        device, mount, kind = fields[0], fields[1].replace("\\040", " "), fields[2]
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and (best is None or len(mount) >= len(best[0])):
            best = (mount, kind, device)
    if best is None:
        return Filesystem("unknown", "", "", None)
    mount, kind, device = best
    journaled = None
    if kind == "ext4" and journals is not None:
        name = name_of(device)
        journaled = any(entry.rsplit("-", 1)[0] == name for entry in journals)
    return Filesystem(kind, device, mount, journaled)


def filesystem_of(path: Path) -> Filesystem:
    """``parse_filesystem`` for this machine; "unknown" where ``/proc/mounts`` cannot be read."""
    try:
        mounts = Path("/proc/mounts").read_text()
    except OSError:
        return Filesystem("unknown", "", "", None)
    journals: list[str] | None
    try:
        journals = os.listdir("/proc/fs/jbd2")
    except FileNotFoundError:  # no journal module loaded: no device has one (if ext4 is there at all)
        journals = [] if os.path.isdir("/proc/fs/ext4") else None
    except OSError:
        journals = None
    return parse_filesystem(
        path.resolve(), mounts, journals, name_of=lambda device: os.path.basename(os.path.realpath(device))
    )
