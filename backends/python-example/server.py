#!/usr/bin/env python3
"""An in-memory backend for the waldur.backend.v1 contract, in Python.

Written from proto/waldur/backend/v1/*.proto and proto/SPEC.md alone, to show
that a backend can be written in any language: it serves over mutual TLS,
checks the client's certificate identity against an allowlist, and passes the
same conformance suite as the Rust backends.

    python3 server.py --listen 127.0.0.1:50061 --ca ca.pem --cert server.pem \
        --key server.key --allow coordinator.example.org --instance hpc

Stubs are generated from the protos at start (grpcio-tools), so nothing
generated is committed here; see proto/README.md for other languages.
"""

import argparse
import hashlib
import logging
import os
import queue
import signal
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import any_pb2, struct_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
DOMAIN = "backend.waldur.v1"
MAX_ID = 255
MAX_TEXT = 4096
MAX_ITEMS = 10000

log = logging.getLogger("python-example")


def load_stubs():
    """Generates the Python stubs into a temporary directory and imports them."""
    from grpc_tools import protoc
    import grpc_tools

    out = tempfile.mkdtemp(prefix="waldur-backend-stubs-")
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = ["waldur/backend/v1/options.proto", "waldur/backend/v1/backend.proto"]
    rc = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{include}",
                      f"--python_out={out}", f"--grpc_python_out={out}", *files])
    if rc != 0:
        sys.exit(f"error: protoc failed with exit code {rc}")
    sys.path.insert(0, out)
    from waldur.backend.v1 import backend_pb2, backend_pb2_grpc  # noqa: E402
    return backend_pb2, backend_pb2_grpc


pb, pb_grpc = load_stubs()
Cap = pb.Capability


class Failure(Exception):
    """A contract error: canonical code, ErrorInfo reason and metadata."""

    def __init__(self, code, reason, message, **metadata):
        super().__init__(message)
        self.code, self.reason, self.message, self.metadata = code, reason, message, metadata


def invalid(field, why):
    return Failure(code_pb2.INVALID_ARGUMENT, "INVALID_FIELD", f"{field}: {why}", field=field)


def not_found(backend_id):
    return Failure(code_pb2.NOT_FOUND, "RESOURCE_NOT_FOUND",
                   f"resource {backend_id} not found", backend_id=backend_id)


def not_managed(backend_id):
    return Failure(code_pb2.FAILED_PRECONDITION, "RESOURCE_NOT_MANAGED",
                   f"{backend_id} is not a resource this backend manages: it was made by hand",
                   backend_id=backend_id)


def req_id(field, value):
    if not value:
        raise invalid(field, "is required")
    return opt_id(field, value)


def opt_id(field, value):
    if len(value.encode()) > MAX_ID:
        raise invalid(field, f"is longer than {MAX_ID} bytes")
    if any(ord(c) < 32 for c in value):
        raise invalid(field, "contains control characters")
    return value


def text(field, value):
    if len(value.encode()) > MAX_TEXT:
        raise invalid(field, f"is longer than {MAX_TEXT} bytes")
    return value


def req_ids(field, values):
    if not values:
        raise invalid(field, "needs at least one entry")
    if len(values) > MAX_ITEMS:
        raise invalid(field, f"has more than {MAX_ITEMS} entries")
    return [req_id(field, v) for v in values]


def umask(field, value):
    if not value:
        return None
    try:
        if int(value, 8) <= 0o777:
            return value
    except ValueError:
        pass
    raise invalid(field, f"{value!r} is not an octal umask")


def resource_ctx(field, msg, has):
    if not has:
        raise invalid(field, "is required")
    req_id(f"{field}.resource_uuid", msg.resource_uuid)
    for name in ("slug", "project_uuid", "project_slug", "customer_uuid", "customer_slug",
                 "offering_uuid", "plan_uuid"):
        opt_id(f"{field}.{name}", getattr(msg, name))
    for name in ("name", "project_name", "customer_name"):
        text(f"{field}.{name}", getattr(msg, name))
    return msg


def users_of(field, users, required):
    if required and not users:
        raise invalid(field, "needs at least one entry")
    for u in users:
        req_id(f"{field}.username", u.username)
        opt_id(f"{field}.role", u.role)
    return list(users)


def stable(*parts):
    return int(hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:12], 16)


def valid_username(name):
    return (0 < len(name) <= 32 and (name[0].isalpha() or name[0] == "_")
            and all(c.isascii() and (c.isalnum() or c in "_-.") for c in name))


class Resource:
    def __init__(self, uuid, parent, description):
        self.uuid, self.parent, self.description = uuid, parent, description
        self.limits, self.users, self.user_limits, self.periodic = {}, {}, {}, {}
        self.access = pb.ACCESS_LEVEL_FULL


COMPONENTS = [
    pb.Component(key="cpu", label="CPU", measured_unit="k-Hours", unit_factor=60000,
                 accounting_type=pb.ACCOUNTING_TYPE_USAGE, limit=10),
    pb.Component(key="storage", label="Storage", measured_unit="GB", unit_factor=1,
                 accounting_type=pb.ACCOUNTING_TYPE_LIMIT),
]
COMPONENT_KEYS = {c.key for c in COMPONENTS}
USAGE_KEYS = [c.key for c in COMPONENTS if c.accounting_type == pb.ACCOUNTING_TYPE_USAGE]
CAPABILITIES = [Cap.Value(n) for n in (
    "CAPABILITY_RESOURCES", "CAPABILITY_LIST_RESOURCES", "CAPABILITY_RESOURCE_LIMITS",
    "CAPABILITY_USER_LIMITS", "CAPABILITY_PAUSE", "CAPABILITY_DOWNSCALE", "CAPABILITY_METADATA",
    "CAPABILITY_MEMBERSHIP", "CAPABILITY_HOME_DIRECTORIES", "CAPABILITY_ROLE_RECONCILIATION",
    "CAPABILITY_USAGE_REPORT", "CAPABILITY_HISTORICAL_USAGE", "CAPABILITY_USERNAMES",
    "CAPABILITY_ORDER_EVALUATION", "CAPABILITY_WATCH", "CAPABILITY_DIAGNOSTICS",
    "CAPABILITY_PERIODIC_SETTINGS", "CAPABILITY_PROJECT_SYNC")]


class Backend(pb_grpc.BackendServiceServicer):
    """Every RPC of the contract, in memory, guarded by one lock."""

    def __init__(self, instance, allowed, delay_ms, unmanaged=()):
        self.instance, self.allowed, self.delay = instance, set(allowed), delay_ms / 1000.0
        # Names the system behind has but this backend did not make: never touched.
        self.unmanaged = set(unmanaged)
        self.caps = CAPABILITIES + ([Cap.Value("CAPABILITY_SLOW_PROVISIONING")] if delay_ms else [])
        self.lock = threading.Lock()
        self.resources, self.usernames, self.homedirs, self.pending = {}, {}, set(), {}
        self.watchers = []

    # -------------------------------------------------------------- plumbing

    def _call(self, context, request, needs, fn):
        """Authorises, finds the instance, checks capabilities, maps errors."""
        try:
            self._authorise(context)
            req_id("instance", request.instance)
            if request.instance != self.instance:
                raise Failure(code_pb2.NOT_FOUND, "UNKNOWN_INSTANCE",
                              f"unknown backend instance {request.instance!r}",
                              instance=request.instance)
            if needs and not any(Cap.Value(n) in self.caps for n in needs):
                raise Failure(code_pb2.UNIMPLEMENTED, "CAPABILITY_NOT_SUPPORTED",
                              f"instance does not advertise {' or '.join(needs)}")
            return fn()
        except Failure as f:
            info = error_details_pb2.ErrorInfo(reason=f.reason, domain=DOMAIN,
                                               metadata={k: str(v) for k, v in f.metadata.items()})
            detail = any_pb2.Any()
            detail.Pack(info)
            status = status_pb2.Status(code=f.code, message=f.message, details=[detail])
            context.abort_with_status(rpc_status.to_status(status))

    def _authorise(self, context):
        auth = context.auth_context()
        sans = [v.decode() for v in auth.get("x509_subject_alternative_name", [])]
        if not sans:
            raise Failure(code_pb2.UNAUTHENTICATED, "IDENTITY_NOT_ALLOWED",
                          "a client certificate is required")
        if not self.allowed.intersection(sans):
            raise Failure(code_pb2.PERMISSION_DENIED, "IDENTITY_NOT_ALLOWED",
                          f"client identity {sans[0]} is not allowed")

    def _get(self, backend_id):
        if req_id("backend_id", backend_id) in self.unmanaged:
            raise not_managed(backend_id)
        r = self.resources.get(backend_id)
        if r is None:
            raise not_found(backend_id)
        return r

    def _check_limits(self, field, limits):
        for k, v in limits.items():
            req_id(field, k)
            if v < 0:
                raise invalid(field, f"limit for {k!r} is negative ({v})")
            if k not in COMPONENT_KEYS:
                raise Failure(code_pb2.INVALID_ARGUMENT, "UNKNOWN_COMPONENT",
                              f"unknown component {k!r}", component=k)
        return dict(limits)

    def _ready(self, kind, backend_id):
        """Slow provisioning: the first call starts the clock, later calls see it finish."""
        if not self.delay:
            return True
        key = (kind, backend_id)
        at = self.pending.get(key)
        if at is None:
            self.pending[key] = time.monotonic() + self.delay
            threading.Timer(self.delay, self._announce, (backend_id, f"{kind}-{backend_id}")).start()
            return False
        if time.monotonic() >= at:
            del self.pending[key]
            return True
        return False

    def _announce(self, backend_id, operation_id):
        event = pb.WatchResponse(backend_id=backend_id, operation_id=operation_id,
                                 state=pb.OPERATION_STATE_SUCCEEDED)
        event.time.GetCurrentTime()
        with self.lock:
            for wanted, q in self.watchers:
                if not wanted or backend_id in wanted:
                    q.put(event)

    def _info(self, backend_id, r):
        info = pb.ResourceInfo(backend_id=backend_id, parent_id=r.parent,
                               description=r.description, limits=r.limits,
                               users=sorted(r.users), access=r.access)
        info.metadata.update({"backend": "python-example", "members": len(r.users)})
        info.endpoints.add(name="login", url=f"ssh://login.example.invalid/{backend_id}")
        info.credentials["initial_password"] = f"py-{stable(backend_id, r.uuid):x}"
        return info

    @staticmethod
    def _result(name, changed):
        return pb.UserResult(username=name, outcome=pb.USER_OUTCOME_APPLIED if changed
                             else pb.USER_OUTCOME_UNCHANGED)

    def _add(self, r, users):
        out = []
        for u in users:
            if not valid_username(u.username):
                out.append(pb.UserResult(username=u.username, outcome=pb.USER_OUTCOME_FAILED,
                                         message="not a valid local username",
                                         code=code_pb2.INVALID_ARGUMENT))
                continue
            out.append(self._result(u.username, u.username not in r.users))
            r.users[u.username] = u.role
        return out

    # -------------------------------------------------------------- identity

    def GetBackendInfo(self, request, context):
        return self._call(context, request, [], lambda: pb.GetBackendInfoResponse(
            name="python-example", version="0.1.0", instance=self.instance,
            vendor_version="python " + sys.version.split()[0], contract_version="1.0"))

    def GetCapabilities(self, request, context):
        return self._call(context, request, [],
                          lambda: pb.GetCapabilitiesResponse(capabilities=sorted(self.caps)))

    def Probe(self, request, context):
        return self._call(context, request, [], lambda: pb.ProbeResponse(ready=True))

    def GetDiagnostics(self, request, context):
        def run():
            check = pb.DiagnosticCheck(name="memory", status=pb.CHECK_STATUS_OK,
                                       message=f"{len(self.resources)} resources")
            return pb.GetDiagnosticsResponse(checks=[check], info={"language": "python"})
        return self._call(context, request, ["CAPABILITY_DIAGNOSTICS"], run)

    def ListComponents(self, request, context):
        return self._call(context, request, [],
                          lambda: pb.ListComponentsResponse(components=COMPONENTS))

    def GenerateBackendId(self, request, context):
        def run():
            base = req_id("base_name", request.base_name)
            return pb.GenerateBackendIdResponse(backend_id=base.lower())
        return self._call(context, request, [], run)

    # ------------------------------------------------------------- resources

    def CreateResource(self, request, context):
        def run():
            backend_id = req_id("backend_id", request.backend_id)
            res = resource_ctx("resource", request.resource, request.HasField("resource"))
            limits = self._check_limits("limits", request.limits)
            users = users_of("users", request.users, False)
            umask("homedir_umask", request.homedir_umask)
            with self.lock:
                if backend_id in self.unmanaged:
                    raise Failure(code_pb2.ALREADY_EXISTS, "RESOURCE_ALREADY_EXISTS",
                                  f"{backend_id} exists and is not managed by this backend",
                                  backend_id=backend_id)
                r = self.resources.get(backend_id)
                if r is not None and r.uuid != res.resource_uuid:
                    raise Failure(code_pb2.ALREADY_EXISTS, "RESOURCE_ALREADY_EXISTS",
                                  f"resource {backend_id} belongs to another Waldur resource",
                                  backend_id=backend_id)
                if r is None:
                    r = self.resources[backend_id] = Resource(res.resource_uuid, res.project_slug,
                                                              res.name)
                r.limits = limits or {c.key: c.limit for c in COMPONENTS if c.HasField("limit")}
                results = self._add(r, users)
                ready = self._ready("create", backend_id)
                return pb.CreateResourceResponse(resource=self._info(backend_id, r), ready=ready,
                                                 user_results=results,
                                                 operation_id="" if ready else f"create-{backend_id}")
        return self._call(context, request, ["CAPABILITY_RESOURCES"], run)

    def GetResource(self, request, context):
        def run():
            with self.lock:
                return pb.GetResourceResponse(
                    resource=self._info(request.backend_id, self._get(request.backend_id)))
        return self._call(context, request, ["CAPABILITY_RESOURCES"], run)

    def ListResources(self, request, context):
        def run():
            if request.page_size < 0:
                raise invalid("page_size", "is negative")
            size = request.page_size or 100
            with self.lock:
                ids = sorted(i for i, r in self.resources.items()
                             if i > request.page_token
                             and (not request.parent_id or r.parent == request.parent_id))
                page = ids[:size]
                return pb.ListResourcesResponse(
                    resources=[self._info(i, self.resources[i]) for i in page],
                    next_page_token=page[-1] if len(ids) > size else "")
        return self._call(context, request, ["CAPABILITY_LIST_RESOURCES"], run)

    def DeleteResource(self, request, context):
        def run():
            backend_id = req_id("backend_id", request.backend_id)
            with self.lock:
                if backend_id in self.unmanaged:
                    raise not_managed(backend_id)
                r = self.resources.get(backend_id)
                if r is None:
                    return pb.DeleteResourceResponse(ready=True, existed=False)
                if not self._ready("delete", backend_id):
                    return pb.DeleteResourceResponse(ready=False, existed=True,
                                                     operation_id=f"delete-{backend_id}")
                if request.mode == pb.DELETION_MODE_SOFT:
                    r.limits = {k: 0 for k in r.limits}
                else:
                    del self.resources[backend_id]
                return pb.DeleteResourceResponse(ready=True, existed=True)
        return self._call(context, request, ["CAPABILITY_RESOURCES"], run)

    def SyncResourceProject(self, request, context):
        def run():
            res = resource_ctx("resource", request.resource, request.HasField("resource"))
            with self.lock:
                r = self._get(request.backend_id)
                changed = bool(res.project_slug) and r.parent != res.project_slug
                if changed:
                    r.parent = res.project_slug
                return pb.SyncResourceProjectResponse(changed=changed)
        return self._call(context, request, ["CAPABILITY_PROJECT_SYNC"], run)

    # ---------------------------------------------------------------- limits

    def SetResourceLimits(self, request, context):
        def run():
            limits = self._check_limits("limits", request.limits)
            with self.lock:
                r = self._get(request.backend_id)
                ready = self._ready("limits", request.backend_id)
                if ready:
                    r.limits = limits
                return pb.SetResourceLimitsResponse(limits=r.limits, ready=ready)
        return self._call(context, request, ["CAPABILITY_RESOURCE_LIMITS"], run)

    def GetResourceLimits(self, request, context):
        def run():
            with self.lock:
                return pb.GetResourceLimitsResponse(limits=self._get(request.backend_id).limits)
        return self._call(context, request, ["CAPABILITY_RESOURCE_LIMITS"], run)

    def SetUserLimits(self, request, context):
        def run():
            username = req_id("username", request.username)
            limits = self._check_limits("limits", request.limits)
            with self.lock:
                r = self._get(request.backend_id)
                if username not in r.users:
                    raise invalid("username", f"{username} is not a member")
                if limits:
                    r.user_limits[username] = limits
                else:
                    r.user_limits.pop(username, None)
                return pb.SetUserLimitsResponse()
        return self._call(context, request, ["CAPABILITY_USER_LIMITS"], run)

    def GetUserLimits(self, request, context):
        def run():
            with self.lock:
                r = self._get(request.backend_id)
                return pb.GetUserLimitsResponse(users=[
                    pb.UserLimits(username=u, limits=l) for u, l in sorted(r.user_limits.items())])
        return self._call(context, request, ["CAPABILITY_USER_LIMITS"], run)

    # ------------------------------------------------------- access, metadata

    def SetResourceAccess(self, request, context):
        needs = {pb.ACCESS_LEVEL_PAUSED: ["CAPABILITY_PAUSE"],
                 pb.ACCESS_LEVEL_DOWNSCALED: ["CAPABILITY_DOWNSCALE"]}.get(
            request.access, ["CAPABILITY_PAUSE", "CAPABILITY_DOWNSCALE"])

        def run():
            if request.access not in (pb.ACCESS_LEVEL_FULL, pb.ACCESS_LEVEL_PAUSED,
                                      pb.ACCESS_LEVEL_DOWNSCALED):
                raise invalid("access", "is required")
            with self.lock:
                r = self._get(request.backend_id)
                changed = r.access != request.access
                r.access = request.access
                return pb.SetResourceAccessResponse(changed=changed)
        return self._call(context, request, needs, run)

    def GetResourceMetadata(self, request, context):
        def run():
            with self.lock:
                info = self._info(request.backend_id, self._get(request.backend_id))
                return pb.GetResourceMetadataResponse(metadata=info.metadata)
        return self._call(context, request, ["CAPABILITY_METADATA"], run)

    # ------------------------------------------------------------ membership

    def AddUsers(self, request, context):
        def run():
            users = users_of("users", request.users, True)
            umask("homedir_umask", request.homedir_umask)
            with self.lock:
                return pb.AddUsersResponse(results=self._add(self._get(request.backend_id), users))
        return self._call(context, request, ["CAPABILITY_MEMBERSHIP"], run)

    def RemoveUsers(self, request, context):
        def run():
            names = req_ids("usernames", request.usernames)
            with self.lock:
                r = self._get(request.backend_id)
                out = []
                for n in names:
                    r.user_limits.pop(n, None)
                    out.append(self._result(n, r.users.pop(n, None) is not None))
                return pb.RemoveUsersResponse(results=out)
        return self._call(context, request, ["CAPABILITY_MEMBERSHIP"], run)

    def ListResourceUsers(self, request, context):
        def run():
            ids = req_ids("backend_ids", request.backend_ids)
            with self.lock:
                found = [pb.ResourceUsers(backend_id=i, usernames=sorted(self.resources[i].users))
                         for i in ids if i in self.resources]
                missing = [i for i in ids if i not in self.resources]
                return pb.ListResourceUsersResponse(resources=found, missing_backend_ids=missing)
        return self._call(context, request, ["CAPABILITY_MEMBERSHIP"], run)

    def CreateHomeDirectories(self, request, context):
        def run():
            names = req_ids("usernames", request.usernames)
            umask("umask", request.umask)
            with self.lock:
                out = [self._result(n, n not in self.homedirs) for n in names]
                self.homedirs.update(names)
                return pb.CreateHomeDirectoriesResponse(results=out)
        return self._call(context, request, ["CAPABILITY_HOME_DIRECTORIES"], run)

    def ReconcileUserRoles(self, request, context):
        def run():
            users = users_of("users", request.users, True)
            with self.lock:
                r = self._get(request.backend_id)
                out = []
                for u in users:
                    if u.username not in r.users:
                        out.append(pb.UserResult(username=u.username, outcome=pb.USER_OUTCOME_FAILED,
                                                 message="not a member", code=code_pb2.INVALID_ARGUMENT))
                        continue
                    out.append(self._result(u.username, r.users[u.username] != u.role))
                    r.users[u.username] = u.role
                return pb.ReconcileUserRolesResponse(results=out)
        return self._call(context, request, ["CAPABILITY_ROLE_RECONCILIATION"], run)

    # ----------------------------------------------------------------- usage

    def GetUsageReport(self, request, context):
        has_period = request.HasField("period")
        needs = ["CAPABILITY_HISTORICAL_USAGE"] if has_period else ["CAPABILITY_USAGE_REPORT"]

        def run():
            ids = req_ids("backend_ids", request.backend_ids)
            tag = ""
            if has_period:
                p = request.period
                if not (1 <= p.month <= 12 and 1970 <= p.year <= 9999):
                    raise invalid("period", f"{p.year}-{p.month} is not a valid month")
                tag = f"{p.year}-{p.month:02d}"
            out = []
            with self.lock:
                for i in ids:
                    r = self.resources.get(i)
                    if r is None:
                        continue
                    usage = pb.ResourceUsage(backend_id=i, total={k: 0.0 for k in USAGE_KEYS})
                    for name in sorted(r.users):
                        amounts = {k: (stable(i, name, k, tag) % 1000) / 100.0 for k in USAGE_KEYS}
                        usage.users.add(username=name, usage=amounts)
                        for k, v in amounts.items():
                            usage.total[k] += v
                    out.append(usage)
            return pb.GetUsageReportResponse(resources=out)
        return self._call(context, request, needs, run)

    # ------------------------------------------------------------- usernames

    def _offering_user(self, request):
        if not request.HasField("user"):
            raise invalid("user", "is required")
        return req_id("user.offering_user_uuid", request.user.offering_user_uuid)

    def GetUsername(self, request, context):
        def run():
            key = self._offering_user(request)
            with self.lock:
                return pb.GetUsernameResponse(username=self.usernames.get(key, ""))
        return self._call(context, request, ["CAPABILITY_USERNAMES"], run)

    def GenerateUsername(self, request, context):
        def run():
            key = self._offering_user(request)
            u = request.user
            domain = u.email.rpartition("@")[2]
            if domain == "link.required":
                raise Failure(code_pb2.FAILED_PRECONDITION, "ACCOUNT_LINKING_REQUIRED",
                              "link your existing account first", comment="link your existing account first",
                              comment_url="https://idm.example.invalid/link")
            if domain == "validation.required":
                raise Failure(code_pb2.FAILED_PRECONDITION, "ADDITIONAL_VALIDATION_REQUIRED",
                              "your affiliation needs validation", comment="your affiliation needs validation",
                              comment_url="https://idm.example.invalid/validate")
            with self.lock:
                if key not in self.usernames:
                    source = (u.waldur_username or u.email.partition("@")[0] or key).lower()
                    base = "".join(c for c in source if c.isascii() and (c.isalnum() or c == "_"))[:24]
                    base = base if valid_username(base) else "u" + base
                    taken, name, n = set(self.usernames.values()), base, 0
                    while name in taken:
                        n += 1
                        name = f"{base}{n}"
                    self.usernames[key] = name
                return pb.GenerateUsernameResponse(username=self.usernames[key])
        return self._call(context, request, ["CAPABILITY_USERNAMES"], run)

    # ---------------------------------------------------------------- orders

    def EvaluateOrder(self, request, context):
        def run():
            if not request.HasField("order"):
                raise invalid("order", "is required")
            o = request.order
            req_id("order.order_uuid", o.order_uuid)
            if o.type == pb.ORDER_TYPE_UNSPECIFIED:
                raise invalid("order.type", "is required")
            resource_ctx("order.resource", o.resource, o.HasField("resource"))
            hint = o.resource.attributes.fields.get("example_decision")
            hint = hint.string_value if hint else ""
            decision = {"reject": pb.ORDER_DECISION_REJECT,
                        "pending": pb.ORDER_DECISION_PENDING}.get(hint, pb.ORDER_DECISION_ACCEPT)
            return pb.EvaluateOrderResponse(decision=decision)
        return self._call(context, request, ["CAPABILITY_ORDER_EVALUATION"], run)

    def Watch(self, request, context):
        q = queue.Queue()
        wanted = set(request.backend_ids)
        self._call(context, request, ["CAPABILITY_WATCH"], lambda: None)
        with self.lock:
            self.watchers.append((wanted, q))
        # Send headers now: clients wait for them before reading events.
        context.send_initial_metadata(())
        try:
            while context.is_active():
                try:
                    yield q.get(timeout=0.2)
                except queue.Empty:
                    continue
        finally:
            with self.lock:
                self.watchers.remove((wanted, q))

    def ApplyPeriodicSettings(self, request, context):
        def run():
            if not request.HasField("settings"):
                raise invalid("settings", "is required")
            with self.lock:
                r = self._get(request.backend_id)
                actions = []
                for k, v in request.settings.fields.items():
                    value = struct_pb2.Value()
                    value.CopyFrom(v)
                    if r.periodic.get(k) != value:
                        r.periodic[k] = value
                        actions.append(f"set {k} on {request.backend_id}")
                return pb.ApplyPeriodicSettingsResponse(actions=actions)
        return self._call(context, request, ["CAPABILITY_PERIODIC_SETTINGS"], run)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", default="127.0.0.1:50061")
    p.add_argument("--ca", required=True, help="site CA that signs client certificates")
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--allow", action="append", required=True, help="allowed client SAN")
    p.add_argument("--instance", default="hpc")
    p.add_argument("--provisioning-delay-ms", type=int, default=0)
    p.add_argument("--unmanaged", action="append", default=[],
                   help="a backend id that exists but is not this backend's (refused)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def read(path):
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            sys.exit(f"error: cannot read {path}: {e.strerror}")

    creds = grpc.ssl_server_credentials([(read(args.key), read(args.cert))],
                                        root_certificates=read(args.ca), require_client_auth=True)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_BackendServiceServicer_to_server(
        Backend(args.instance, args.allow, args.provisioning_delay_ms, args.unmanaged), server)
    if server.add_secure_port(args.listen, creds) == 0:
        sys.exit(f"error: cannot listen on {args.listen}")
    server.start()
    log.info("python example backend listening on %s (instance %s)", args.listen, args.instance)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=5).wait()


if __name__ == "__main__":
    main()
