"""The throwaway-cluster path of the harness, from each source of server binaries here."""

from __future__ import annotations

from pathlib import Path

import pytest

from importd.cluster import Cluster, ClusterError


def test_a_bindir_without_a_server_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="holds no initdb, pg_ctl and postgres"):
        Cluster(tmp_path)
