"""Which filesystem holds the database, and the warning for ext4 without a journal.

The mount tables are real ``/proc/mounts`` lines (this project's test machine, a journaled
laptop, an LVM root); the journal names are what ``/proc/fs/jbd2`` lists on them.
"""

from __future__ import annotations

import os
from pathlib import Path

from agentd.store.filesystem import filesystem_of, parse_filesystem

NO_JOURNAL = """\
proc /proc proc rw,relatime 0 0
tmpfs /dev/shm tmpfs rw,relatime,size=24683584k 0 0
/dev/vda / ext4 rw,relatime,discard,resv_strict,resuid=65534,resgid=65534 0 0
"""

LAPTOP = """\
/dev/nvme0n1p2 / ext4 rw,relatime,errors=remount-ro 0 0
/dev/nvme0n1p1 /boot/efi vfat rw,relatime 0 0
/dev/sda1 /srv/data xfs rw,relatime,attr2,inode64 0 0
/dev/sdb1 /mnt/my\\040disk ext4 rw,relatime 0 0
"""

LVM = "/dev/mapper/vg-root / ext4 rw,relatime 0 0\n"


def test_ext4_without_a_journal_is_warned_about() -> None:
    fs = parse_filesystem(Path("/var/lib/agentd/data"), NO_JOURNAL, [])
    assert (fs.kind, fs.device, fs.mount, fs.journaled) == ("ext4", "/dev/vda", "/", False)
    assert fs.slow_after_deletes
    warning = fs.warning()
    assert warning is not None and "without a journal" in warning and "/dev/vda" in warning


def test_the_longest_mount_point_holding_the_path_wins() -> None:
    assert parse_filesystem(Path("/dev/shm/agentd"), NO_JOURNAL, []).kind == "tmpfs"
    assert parse_filesystem(Path("/srv/data/agentd"), LAPTOP, ["nvme0n1p2-8"]).kind == "xfs"
    assert parse_filesystem(Path("/srv/database"), LAPTOP, ["nvme0n1p2-8"]).mount == "/"  # not /srv/data
    spaced = parse_filesystem(Path("/mnt/my disk/agentd"), LAPTOP, ["nvme0n1p2-8", "sdb1-8"])
    assert (spaced.mount, spaced.journaled) == ("/mnt/my disk", True)


def test_journaled_or_unknown_says_nothing() -> None:
    journaled = parse_filesystem(Path("/home/me/.local/share/agentd"), LAPTOP, ["nvme0n1p2-8"])
    assert journaled.journaled is True and journaled.warning() is None
    # /proc/fs/jbd2 unreadable: we do not know, so we do not warn
    assert parse_filesystem(Path("/var/lib/agentd"), NO_JOURNAL, None).warning() is None
    assert parse_filesystem(Path("/srv/data/agentd"), LAPTOP, []).warning() is None  # xfs
    assert parse_filesystem(Path("/x"), "", []).kind == "unknown"


def test_the_journal_is_matched_by_the_kernel_name_of_the_device() -> None:
    names = {"/dev/mapper/vg-root": "dm-0"}
    fs = parse_filesystem(Path("/var/lib/agentd"), LVM, ["dm-0-8"], name_of=lambda d: names.get(d, os.path.basename(d)))
    assert fs.journaled is True
    assert parse_filesystem(Path("/var/lib/agentd"), LVM, ["dm-0-8"]).journaled is False  # by the mapper name: no match


def test_this_machine_is_described(tmp_path: Path) -> None:
    fs = filesystem_of(tmp_path)
    assert fs.kind != "unknown" and str(tmp_path).startswith(fs.mount)
