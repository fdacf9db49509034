"""A Beam FileSystem for tests under the scheme "aliasfs://", backed by the local disk.

It lets tests drive the code path cattag takes for remote objects (gs://, s3://) without a
network: Beam picks it by scheme, and cattag treats it like any non-local filesystem. Imported
for its side effect (Beam registers FileSystem subclasses by being defined).
"""

from __future__ import annotations

from apache_beam.io.localfilesystem import LocalFileSystem

PREFIX = "aliasfs://"


def _local(path: str) -> str:
    return path[len(PREFIX) - 1:] if path.startswith(PREFIX) else path


class AliasFileSystem(LocalFileSystem):
    @classmethod
    def scheme(cls):
        return "aliasfs"

    def join(self, basepath, *paths):
        return PREFIX + super().join(_local(basepath), *paths).lstrip("/")

    def split(self, path):
        head, tail = super().split(_local(path))
        return PREFIX + head.lstrip("/"), tail

    def _wrap(name):  # pylint: disable=no-self-argument
        def method(self, path, *args, **kwargs):
            return getattr(LocalFileSystem, name)(self, _local(path), *args, **kwargs)
        return method

    open = _wrap("open")
    exists = _wrap("exists")
    size = _wrap("size")
    metadata = _wrap("metadata")
