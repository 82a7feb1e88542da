"""The running core: function workers, access enforcement, the invoke API and metrics.

``pyengine core start`` runs :class:`Core` over the group deployed into a root; see
docs/core.md.
"""

from __future__ import annotations

from pyengine.common.paths import default_root
from pyengine.core.api import ADDRESS_FILE
from pyengine.core.group import DeployedGroup, FunctionSpec, ResourceGrant, read_deployed_group
from pyengine.core.server import Core

__all__ = ["ADDRESS_FILE", "Core", "DeployedGroup", "FunctionSpec", "ResourceGrant",
           "default_root", "read_deployed_group"]
