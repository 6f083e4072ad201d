"""What ``pip install`` put beside this package: its version and the ``agora-manager`` binary.

The wheel that ``pip install ./client/python`` builds (with maturin) carries the package and the
binary, which the installer writes to the environment's scripts directory (``venv/bin``,
``~/.local/bin`` for ``--user``, ``DIR/bin`` for ``--target DIR``). The distribution's
``RECORD`` says where it went, relative to the directory the package was installed into, so this
looks the binary up there: that finds the binary of this very installation, whether or not its
scripts directory is on ``PATH``, and never one of another installation of ``agora``.

The version has one source, the Rust workspace's ``Cargo.toml``: maturin writes it into the
installed metadata, read here. A package imported from the source tree, not installed, reads
``Cargo.toml`` itself.
"""

from __future__ import annotations

import functools
import os
import re
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from importlib import metadata

#: The distribution's name, which is also the import name.
DIST_NAME = "agora"
#: The binary the wheel installs.
MANAGER_BIN_NAME = "agora-manager"

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
#: Where this package was installed (``site-packages``), or the source tree's ``client/python``.
_INSTALL_ROOT = os.path.dirname(_PACKAGE_DIR)


@functools.lru_cache(maxsize=None)
def _own_distribution() -> Optional[metadata.Distribution]:
    """The installed distribution this package belongs to: the ``agora`` metadata in the
    directory the package was imported from, whose files include this package. None when the
    package was not installed (imported from the source tree). Found once per process: where
    this package was imported from does not change, and every manager started asks."""
    # Imported here, when a manager is started or the version asked for, not by `import agora`:
    # it is slow to import.
    from importlib import metadata

    here = os.path.realpath(os.path.join(_PACKAGE_DIR, "__init__.py"))
    # By name: reading the metadata of every distribution in site-packages takes long in a
    # large environment.
    for dist in metadata.distributions(name=DIST_NAME, path=[_INSTALL_ROOT]):
        owned = dist.locate_file(os.path.join(DIST_NAME, "__init__.py"))
        if os.path.realpath(str(owned)) == here:
            return dist
    return None


def installed_manager_binary() -> Optional[str]:
    """The ``agora-manager`` installed with this package, or None (not installed by pip, or the
    file is gone or not executable)."""
    dist = _own_distribution()
    if dist is None:
        return None
    for file in dist.files or ():
        if file.name != MANAGER_BIN_NAME:
            continue
        # Where RECORD says; `pip install --target DIR` writes RECORD in a staging prefix and
        # then moves the package to DIR and the scripts to DIR/bin, which RECORD does not say.
        for path in (str(dist.locate_file(file)), os.path.join(_INSTALL_ROOT, "bin", file.name)):
            path = os.path.realpath(path)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
    return None


_WORKSPACE_VERSION = re.compile(
    r'^\[workspace\.package\][^\[]*?^version\s*=\s*"([^"]+)"', re.MULTILINE | re.DOTALL
)


def _source_tree_version() -> Optional[str]:
    """The workspace version from ``Cargo.toml``, when this package is the source tree's."""
    cargo_toml = os.path.join(_INSTALL_ROOT, "..", "..", "Cargo.toml")
    try:
        with open(cargo_toml, encoding="utf-8") as f:
            found = _WORKSPACE_VERSION.search(f.read())
    except OSError:
        return None
    return found.group(1) if found else None


def version() -> str:
    """This package's version: the installed metadata's, else the source tree's ``Cargo.toml``'s,
    else ``0+unknown``."""
    dist = _own_distribution()
    if dist is not None:
        return dist.version
    return _source_tree_version() or "0+unknown"
