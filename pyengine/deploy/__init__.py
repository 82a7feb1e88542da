"""Deploying groups: group file -> validated plan -> fetch -> verify -> unpack -> install -> state.

This package never imports a backend or the native core: a deployment works on a machine with no
framework installed.

Main entry points
-----------------
- :func:`load_group` / :func:`validate_group`: read and check a group file;
  :func:`group_file_problems`: every problem at once, for ``pyengine validate``.
- :func:`deploy`, :func:`rollback`, :func:`reset`: change what is installed in a root.
- :func:`current`: the deployed group with each resource's local path and each function's
  installed code (what the core runs); :func:`recover` cleans up after a killed deploy.
- :func:`list_deployments`, :func:`get_deployment`, :func:`list_installed`: history and state;
  :func:`changed_versions`: installed versions changed in place (the core reports them at start).
- :func:`group_policy`: the IAM policy a group's S3 sources need.
- :func:`high_water`, :func:`raise_high_water`: marks in the root's state that only grow (the
  fleet's highest accepted document serial and version).
- Packages and trees, for the fleet: :func:`fetch` (a verified, resumable download),
  :func:`unpack` (a package into a directory), :func:`walk_tree` and :class:`ExactReader` (a
  function's code read as a deploy copies it), :func:`private_file` (a file only the core's user
  reads).

The core reads what is installed through :mod:`pyengine.deploy.installed` only.
"""

from __future__ import annotations

from pyengine.common.paths import default_root, resolve_root
from pyengine.deploy.download import fetch
from pyengine.deploy.errors import DeployBusyError, DeployError, GroupError, UnpackError
from pyengine.deploy.group import (
    DeviceSpec,
    Function,
    FunctionResource,
    Group,
    ModelSpec,
    Owner,
    Resource,
)
from pyengine.deploy.installed import (
    InstalledFunction,
    InstalledGroup,
    InstalledResource,
    changed_versions,
    current,
    has_state,
    list_installed,
)
from pyengine.deploy.packages import unpack
from pyengine.deploy.policy import group_buckets, group_policy
from pyengine.deploy.private import private_file
from pyengine.deploy.records import (
    STATUSES,
    Deployment,
    ItemResult,
    ProgressEvent,
    get_deployment,
    list_deployments,
)
from pyengine.deploy.recovery import recover
from pyengine.deploy.rollback import reset, rollback
from pyengine.deploy.run import deploy
from pyengine.deploy.state import high_water, raise_high_water
from pyengine.deploy.subscriptions import Subscription
from pyengine.deploy.tree import ExactReader, walk_tree
from pyengine.deploy.validate import group_file_problems, load_group, read_group_file, validate_group
from pyengine.deploy.writer import DEFAULT_MAX_FILES, TREE_MAX_BYTES, narrow_mode

__all__ = [
    "DEFAULT_MAX_FILES",
    "STATUSES",
    "TREE_MAX_BYTES",
    "DeployBusyError",
    "DeployError",
    "Deployment",
    "DeviceSpec",
    "ExactReader",
    "Function",
    "FunctionResource",
    "Group",
    "GroupError",
    "InstalledFunction",
    "InstalledGroup",
    "InstalledResource",
    "ItemResult",
    "ModelSpec",
    "Owner",
    "ProgressEvent",
    "Resource",
    "Subscription",
    "UnpackError",
    "changed_versions",
    "current",
    "default_root",
    "deploy",
    "fetch",
    "get_deployment",
    "group_buckets",
    "group_file_problems",
    "group_policy",
    "has_state",
    "high_water",
    "list_deployments",
    "list_installed",
    "load_group",
    "narrow_mode",
    "private_file",
    "raise_high_water",
    "read_group_file",
    "recover",
    "reset",
    "resolve_root",
    "rollback",
    "unpack",
    "validate_group",
    "walk_tree",
]
