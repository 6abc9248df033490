"""One training run per work directory: an exclusive lock on `<workdir>/train.lock`.

The lock is an advisory `fcntl.flock` on the file, which the kernel releases when its process
ends in any way (kill -9 included), so a lock left by a dead run is never a problem: the next run
takes it over and says whose it was. The file holds the holder's pid, host and start time, so
a second run on a live work directory is refused with a message naming them. In a multi-host
run only process 0 takes it (the other processes belong to the same run). flock is reliable on
local disks and on most network filesystems that support it (NFSv4, Lustre); where it is not,
the lock is only as good as the filesystem.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time

NAME = 'train.lock'


class Busy(ValueError):
  """Another live process holds the work directory."""


class WorkdirLock:
  """Context manager: hold the work directory's lock for the life of a run."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, NAME)
    self.fd = None
    self.previous = None  # the holder's record found in a lock file left by a dead run

  def __enter__(self) -> 'WorkdirLock':
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = _read(fd)
        os.close(fd)
        raise Busy(f'{os.path.dirname(self.path) or "."} is in use by another training run '
                   f'({_describe(holder)}); wait for it or stop it, or use another --workdir. '
                   f'(The lock is {self.path}; it is released when that process ends.)') from None
      # The file may have been removed by a holder releasing it between our open and flock:
      # then we hold a lock on a deleted file; open the path again.
      try:
        same = os.path.samestat(os.fstat(fd), os.stat(self.path))
      except FileNotFoundError:
        same = False
      if same:
        break
      os.close(fd)
    self.previous = _read(fd) or None
    record = {'pid': os.getpid(), 'host': socket.gethostname(),
              'started': time.strftime('%Y-%m-%d %H:%M:%S')}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode() + b'\n', 0)
    self.fd = fd
    return self

  def __exit__(self, *exc) -> None:
    if self.fd is None:
      return
    try:
      os.unlink(self.path)  # unlink while holding, so no one locks a file about to vanish
    except FileNotFoundError:
      pass
    fcntl.flock(self.fd, fcntl.LOCK_UN)
    os.close(self.fd)
    self.fd = None

  def takeover_note(self) -> str | None:
    """A line about the dead run whose lock file this run took over, if there was one."""
    if not self.previous:
      return None
    return f'took over the lock of a run that ended without releasing it ({_describe(self.previous)})'


def _read(fd) -> dict:
  try:
    return json.loads(os.pread(fd, 4096, 0).decode() or '{}')
  except (ValueError, UnicodeDecodeError):
    return {}


def _describe(holder: dict) -> str:
  if not holder:
    return 'holder unknown'
  return (f'pid {holder.get("pid", "?")} on host {holder.get("host", "?")}, '
          f'started {holder.get("started", "?")}')
