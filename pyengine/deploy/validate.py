"""The group file: reading (YAML or JSON) and validation with precise messages.

Every problem names the field path (``resources[1].model.destination``), the offending value and
the rule it breaks; all problems are reported at once.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pyengine.batching_config import BatchingConfig
from pyengine.common.aws import AwsSettings
from pyengine.common.topics import filter_problem
from pyengine.deploy.checks import (
    CONCURRENCY_MAX,
    HANDLER_RE,
    Checker,
    check_device,
    check_environment,
    check_model,
    check_network,
    check_run_as,
    check_volume,
    invoke_list,
    some,
)
from pyengine.deploy.errors import GroupError
from pyengine.deploy.group import (
    Function,
    FunctionResource,
    Group,
    Resource,
)
from pyengine.deploy.parse import parse_group_text, read_text
from pyengine.deploy.subscriptions import BROKERS, Subscription, routing_cycles
from pyengine.device_files import is_gpu_node


def read_group_file(path: str) -> dict[str, Any]:
    """The raw mapping in a YAML or JSON group file, read with the limits of
    :mod:`pyengine.deploy.parse` (size, aliases, nesting, duplicate keys)."""
    data = parse_group_text(read_text(path), path)
    if not isinstance(data, dict):
        raise GroupError(path, [f"the top level must be a mapping, not {type(data).__name__}"])
    return data


def load_group(path: str) -> Group:
    """Read and validate a group file; raises :class:`GroupError` listing every problem."""
    path = os.path.abspath(path)
    return validate_group(read_group_file(path), path)


def group_file_problems(path: str) -> list[str]:
    """Every problem a deploy of group file ``path`` would meet before downloading anything:
    the schema's (as :func:`load_group` lists them) and local (file://) packages that do not
    exist, all at once, as ``field.path: message``. Reads only (``pyengine validate``)."""
    path = os.path.abspath(path)
    try:
        validate_group(read_group_file(path), path, local_sources=True)
    except GroupError as exc:
        return list(exc.problems)
    return []


def validate_group(data: dict[str, Any], path: str = "<group>", local_sources: bool = False
                   ) -> Group:
    """Validate a raw group mapping; relative paths resolve against ``path``'s directory.
    ``local_sources``: also require file:// packages to exist (a deploy instead reports a
    missing one as that resource's failure)."""
    c = Checker(os.path.dirname(os.path.abspath(path)) if path != "<group>" else os.getcwd(),
                 local_sources)
    top = c.mapping(
        "", data, ("name", "resources", "functions", "subscriptions", "s3", "sagemaker"), ("name",)
    )
    name = c.ident("name", top.get("name")) if top.get("name") is not None else ""
    aws: dict[str, AwsSettings] = {}
    for svc in ("s3", "sagemaker"):
        m = c.mapping(svc, top.get(svc) or {}, ("endpoint_url", "region"))
        ep, region = m.get("endpoint_url"), m.get("region")
        if ep is not None and (not isinstance(ep, str) or not re.match(r"^https?://", ep)):
            c.bad(f"{svc}.endpoint_url", f"{ep!r} must be an http:// or https:// URL")
        if region is not None and not isinstance(region, str):
            c.bad(f"{svc}.region", f"{region!r} must be a region name such as us-east-1")
        aws[svc] = AwsSettings(
            c.expand(f"{svc}.endpoint_url", ep) if isinstance(ep, str) else None,
            region if isinstance(region, str) else None,
        )

    resources: list[Resource] = []
    raw_res = top.get("resources") or []
    if not isinstance(raw_res, list):
        c.bad("resources", f"expected a list, got {raw_res!r}")
        raw_res = []
    seen: dict[str, str] = {}
    for i, r in enumerate(raw_res):
        where = f"resources[{i}]"
        m = c.mapping(where, r, ("id", "name", "model", "device", "volume"), ("id",))
        if not m:
            continue
        rid = c.ident(f"{where}.id", m.get("id")) if m.get("id") is not None else ""
        rname = c.ident(f"{where}.name", m["name"]) if m.get("name") is not None else rid
        if rid in seen:
            c.bad(f"{where}.id", f"{rid!r} is already the id of {seen[rid]}; ids must be unique")
        seen[rid] = where
        kinds = [k for k in ("model", "device", "volume") if m.get(k) is not None]
        if len(kinds) != 1:
            c.bad(where, "a resource needs exactly one of 'model', 'device' or 'volume'"
                  f"{' (it has ' + ', '.join(kinds) + ')' if kinds else ''}")
            continue
        model = check_model(c, f"{where}.model", m["model"]) if kinds == ["model"] else None
        dev = check_device(c, f"{where}.device", m["device"]) if kinds == ["device"] else None
        vol = check_volume(c, f"{where}.volume", m["volume"]) if kinds == ["volume"] else None
        if model is None and dev is None and vol is None:
            continue
        resources.append(Resource(rid, rname, model, dev, vol))

    dests = [
        (r.model.destination, i) for i, r in enumerate(resources) if r.model and r.model.destination
    ]
    for a, ia in dests:
        for b, ib in dests:
            if ia < ib and (
                a == b or b.startswith(a.rstrip("/") + "/") or a.startswith(b.rstrip("/") + "/")
            ):
                rel = (
                    "the same as" if a == b else ("inside" if a.startswith(b + "/") else "contains")
                )
                c.bad(
                    f"resources[{ib}].model.destination",
                    f"{b!r} overlaps resources[{ia}] ({a!r}: {rel}); each resource needs its own "
                    "directory, not nested in another's",
                )

    for iv, v in enumerate(resources):
        if v.volume is None:
            continue
        vp = v.volume.path.rstrip("/") or "/"
        for a, ia in dests:
            if a == vp or a.startswith(vp + "/") or vp.startswith(a.rstrip("/") + "/"):
                c.bad(f"resources[{iv}].volume.path", f"{v.volume.path!r} overlaps the model "
                      f"destination of resources[{ia}] ({a!r}): a function writing the volume "
                      "would change the installed model; keep volumes and models apart")

    functions: list[Function] = []
    raw_fn = top.get("functions") or []
    if not isinstance(raw_fn, list):
        c.bad("functions", f"expected a list, got {raw_fn!r}")
        raw_fn = []
    fnames: set[str] = set()
    by_id = {r.id: r for r in resources}
    known_ids = some(sorted(by_id))
    # Every name, for the invoke lists (which may name functions further down).
    all_names = sorted({str(f["name"]) for f in raw_fn if isinstance(f, dict) and f.get("name")})
    for i, f in enumerate(raw_fn):
        where = f"functions[{i}]"
        m = c.mapping(
            where,
            f,
            (
                "name",
                "handler",
                "code",
                "pinned",
                "timeout_s",
                "memory_mb",
                "environment",
                "resources",
                "max_code_mb",
                "max_code_files",
                "network",
                "invoke",
                "run_as",
                "concurrency",
                "idle_timeout_s",
            ),
            ("name", "handler", "code"),
        )
        if not m:
            continue
        fname = c.ident(f"{where}.name", m.get("name")) if m.get("name") is not None else ""
        if fname in fnames:
            c.bad(f"{where}.name", f"{fname!r} is already the name of another function")
        fnames.add(fname)
        handler = m.get("handler")
        if handler is not None and (not isinstance(handler, str) or not HANDLER_RE.match(handler)):
            c.bad(
                f"{where}.handler",
                f"{handler!r} must be module.function (e.g. classify.function_handler)",
            )
            handler = None
        code = ""
        if m.get("code") is not None:
            code = c.string(f"{where}.code", m["code"])
            if code:
                code = os.path.normpath(os.path.join(c.base_dir, c.expand(f"{where}.code", code)))
                if not os.path.isdir(code):
                    c.bad(f"{where}.code", f"{m['code']!r} ({code}) is not a directory")
                elif handler:
                    mod = handler.rsplit(".", 1)[0].replace(".", "/")
                    if not (
                        os.path.isfile(os.path.join(code, mod + ".py"))
                        or os.path.isfile(os.path.join(code, mod, "__init__.py"))
                    ):
                        c.bad(f"{where}.handler", f"{handler!r}: no {mod}.py in {code}")
        pinned = m.get("pinned", False)
        if not isinstance(pinned, bool):
            c.bad(f"{where}.pinned", f"{pinned!r} must be true or false")
        timeout = c.number(f"{where}.timeout_s", m.get("timeout_s", 3), 0.001, 86400)
        memory = c.number(f"{where}.memory_mb", m.get("memory_mb", 128), 1, 2**20, integer=True)
        env = check_environment(c, f"{where}.environment", m.get("environment"))
        frs: list[FunctionResource] = []
        raw_fr = m.get("resources") or []
        if not isinstance(raw_fr, list):
            c.bad(f"{where}.resources", f"expected a list, got {raw_fr!r}")
            raw_fr = []
        for j, fr in enumerate(raw_fr):
            w = f"{where}.resources[{j}]"
            fm = c.mapping(w, fr, ("id", "permission", "batching"), ("id",))
            if not fm:
                continue
            fr_id = fm.get("id")
            perm = c.permission(f"{w}.permission", fm.get("permission", "ro"))
            if not isinstance(fr_id, str) or fr_id not in by_id:
                c.bad(
                    f"{w}.id",
                    f"{fr_id!r} is not the id of any resource in the group "
                    f"(known: {known_ids})",
                )
                continue
            res = by_id[str(fr_id)]
            if perm == "ro" and res.device is not None and is_gpu_node(res.device.path):
                c.bad(
                    f"{w}.permission",
                    f"'ro' on GPU {res.device.path}: the CUDA driver opens the GPU's device "
                    "files read-write, which a ro device grant refuses; grant rw",
                )
            if perm == "rw" and res.max_permission == "ro":
                c.bad(
                    f"{w}.permission",
                    f"'rw' is more than resource {fr_id!r} allows: its owner setting is "
                    f"{'ro' if res.model and res.model.owner else 'absent (read-only)'}; set "
                    "model.owner.permission to rw or grant ro",
                )
            batching = None
            if fm.get("batching") is not None:
                if res.kind != "model":
                    c.bad(f"{w}.batching", f"{fr_id!r} is a device; only model resources batch")
                else:
                    try:
                        batching = BatchingConfig.from_dict(fm["batching"], f"{w}.batching")
                    except ValueError as exc:
                        c.problems.append(str(exc))
            frs.append(FunctionResource(str(fr_id), perm, batching))
        if pinned is True and m.get("idle_timeout_s") is not None:
            c.bad(f"{where}.idle_timeout_s", f"{m['idle_timeout_s']!r}: a pinned function's "
                  "workers never stop for being idle; remove idle_timeout_s or set pinned: false")
        code_mb = m.get("max_code_mb")
        code_files = m.get("max_code_files")
        functions.append(
            Function(
                fname,
                str(handler or ""),
                code,
                bool(pinned),
                float(timeout),
                int(memory),
                env,
                tuple(frs),
                int(c.number(f"{where}.max_code_mb", code_mb, 1, 2**20) * 2**20)
                if code_mb is not None
                else None,
                int(c.number(f"{where}.max_code_files", code_files, 1, 10**8, integer=True))
                if code_files is not None
                else None,
                check_network(c, f"{where}.network", m.get("network")),
                invoke_list(c, f"{where}.invoke", m.get("invoke"), fname, all_names),
                check_run_as(c, f"{where}.run_as", m.get("run_as")),
                int(c.number(f"{where}.concurrency", m["concurrency"], 1, CONCURRENCY_MAX,
                             integer=True)) if m.get("concurrency") is not None else None,
                float(c.number(f"{where}.idle_timeout_s", m["idle_timeout_s"], 0.1, 86400))
                if m.get("idle_timeout_s") is not None else None,
            )
        )

    check_rw_exclusive(c, functions, {r.id for r in resources if r.kind == "model"})
    subscriptions = check_subscriptions(c, top.get("subscriptions"), fnames)
    if c.problems:
        raise GroupError(path, c.problems)
    return Group(
        name, tuple(resources), tuple(functions), aws["s3"], aws["sagemaker"], path, subscriptions
    )


def check_rw_exclusive(c: Checker, functions: list[Function], models: set[str]) -> None:
    """A model resource one function may write is that function's alone: another function
    mapping the same files would see them change (a truncation kills it with SIGBUS). Devices
    (a GPU) are shared as the group says."""
    users: dict[str, list[tuple[int, int, str]]] = {}
    for i, f in enumerate(functions):
        for j, fr in enumerate(f.resources):
            if fr.id in models:
                users.setdefault(fr.id, []).append((i, j, fr.permission))
    for rid, grants in users.items():
        writers = [(i, j) for i, j, perm in grants if perm == "rw"]
        if not writers or len(grants) < 2:
            continue
        wi, wj = writers[0]
        for i, j, perm in grants:
            if (i, j) != (wi, wj):
                c.bad(f"functions[{i}].resources[{j}]",
                      f"resource {rid!r} is granted rw to function {functions[wi].name!r} "
                      f"(functions[{wi}].resources[{wj}]); a resource a function may write "
                      f"cannot be granted to another ({perm} here): give each its own resource")


def check_subscriptions(c: Checker, raw: Any, functions: set[str]) -> tuple[Subscription, ...]:
    """The ``subscriptions`` list: endpoints are functions of the group, devices or cloud."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        c.bad("subscriptions", f"expected a list, got {raw!r}")
        return ()
    known = some(sorted(functions))
    out: list[Subscription] = []
    wheres: list[str] = []
    seen: dict[tuple[str, str, str], str] = {}
    for i, s in enumerate(raw):
        where = f"subscriptions[{i}]"
        m = c.mapping(where, s, ("source", "topic", "target", "retain"),
                      ("source", "topic", "target"))
        if not m or any(m.get(k) is None for k in ("source", "topic", "target")):
            continue
        ok = True
        for key in ("source", "target"):
            v = m[key]
            if v in BROKERS:
                if v in functions:
                    c.bad(f"{where}.{key}", f"{v!r} is ambiguous: it means the {v} endpoint, and "
                          f"a function of the group has that name; rename the function")
                    ok = False
                continue
            if not isinstance(v, str) or v not in functions:
                c.bad(f"{where}.{key}", f"{v!r} is not 'devices', 'cloud' or the name of a "
                      f"function of the group (functions: {known})")
                ok = False
        problem = filter_problem(m["topic"])
        if problem:
            c.bad(f"{where}.topic", problem)
            ok = False
        if ok and m["source"] in BROKERS and m["target"] in BROKERS:
            c.bad(where, f"{m['source']!r} to {m['target']!r}: a subscription needs a function "
                  "at one end (the core does not relay between brokers)")
            ok = False
        retain = m.get("retain", False)
        if not isinstance(retain, bool):
            c.bad(f"{where}.retain", f"{retain!r} must be true or false")
            ok = False
        elif retain and (m["source"] in BROKERS or m["target"] not in BROKERS):
            c.bad(f"{where}.retain", "only a subscription from a function to 'devices' or "
                  f"'cloud' can grant retained messages (this one is {m['source']!r} to "
                  f"{m['target']!r})")
            ok = False
        if not ok:
            continue
        sub = Subscription(str(m["source"]), str(m["topic"]), str(m["target"]), retain)
        key3 = (sub.source, sub.topic, sub.target)
        if key3 in seen:
            c.bad(where, f"the same subscription as {seen[key3]}; list each route once")
            continue
        seen[key3] = where
        out.append(sub)
        wheres.append(where)
    for component, on_it in routing_cycles(out):
        route = "; ".join(f"{wheres[i]}: {out[i].source} -> {out[i].topic} -> {out[i].target}"
                          for i in on_it)
        one = len(component) == 1
        c.bad(", ".join(wheres[i] for i in on_it),
              f"a routing cycle: what {' and '.join(component)} "
              f"{'publishes' if one else 'publish'} can come back to call "
              f"{'it' if one else 'them'} again, without end ({route}); make the topics of "
              "one of these routes disjoint")
    return tuple(out)
