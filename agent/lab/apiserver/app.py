"""The HTTP side: request paths to resources, verbs to object operations, watches as streams of
JSON lines (one `{"type", "object"}` per line, as the API server writes them)."""
from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from kernsplit.agent.lab.apiserver import discovery, openapi, openapi_v2, tables
from kernsplit.agent.lab.apiserver.errors import ApiError
from kernsplit.agent.lab.apiserver.objects import Objects
from kernsplit.agent.lab.apiserver.resources import Resource
from kernsplit.agent.lab.apiserver.selectors import SelectorError, field_selector, label_selector
from kernsplit.agent.lab.apiserver.store import Expired, Watcher
from kernsplit.agent.lab.apiserver.views import to_client


@dataclass(frozen=True)
class Target:
    resource: Resource
    namespace: str            # "" = all namespaces (or a cluster-scoped kind)
    name: str                 # "" = the collection
    subresource: str = ""


class Handlers:
    def __init__(self, objects: Objects, bookmark_interval: float, address: Callable[[], str],
                 paused: Callable[[], bool]) -> None:
        self.objects, self.store, self.registry = objects, objects.store, objects.registry
        self.bookmark_interval = bookmark_interval
        self.address, self.paused = address, paused

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 ** 2)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[[web.Request], Awaitable]) -> web.StreamResponse:
        if self.paused():
            # Unreachable: no answer at all, the connection just goes away.
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError("the lab API server is paused")
        try:
            return await handler(request)
        except ApiError as exc:
            return web.json_response(exc.status(), status=exc.code)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if request.method == "GET":
            doc = self._fixed_document(request, parts)
            if doc is not None:
                return doc
        target = self._target(parts)
        return await self._verb(request, target)

    # documents that are not objects ----------------------------------------------------------
    def _fixed_document(self, request: web.Request, parts: list[str]) -> web.StreamResponse | None:
        path = "/" + "/".join(parts)
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        if path == "/version":
            return web.json_response(openapi.SERVER_VERSION)
        if path in ("/api", "/apis"):
            version = discovery.aggregated_version(request.headers.get("Accept", ""))
            if version:
                body = discovery.aggregated(self.registry, version, core=path == "/api")
                return web.Response(body=json.dumps(body).encode(),
                                    headers={"Content-Type": discovery.AGGREGATED[version]})
            if path == "/api":
                return web.json_response(discovery.api_versions(self.address()))
            return web.json_response(discovery.api_group_list(self.registry))
        if path == "/openapi/v2":
            return openapi_v2.v2_response(request, self.registry)
        if path == "/openapi/v3":
            return web.json_response(openapi.v3_root(self.registry))
        if parts[:2] == ["openapi", "v3"]:
            doc = self._v3_document(parts[2:])
            if doc is None:
                raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
            return web.json_response(doc)
        return self._discovery_document(parts)

    def _v3_document(self, rest: list[str]) -> dict | None:
        if rest[:1] == ["api"] and len(rest) == 2:
            return openapi.v3_group_version(self.registry, "", rest[1])
        if rest[:1] == ["apis"] and len(rest) == 3:
            return openapi.v3_group_version(self.registry, rest[1], rest[2])
        return None

    def _discovery_document(self, parts: list[str]) -> web.StreamResponse | None:
        doc = None
        if parts[:1] == ["api"] and len(parts) == 2:
            doc = discovery.api_resource_list(self.registry, "", parts[1])
        elif parts[:1] == ["apis"] and len(parts) == 2:
            doc = discovery.api_group(self.registry, parts[1])
        elif parts[:1] == ["apis"] and len(parts) == 3:
            doc = discovery.api_resource_list(self.registry, parts[1], parts[2])
        else:
            return None
        if doc is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return web.json_response(doc)

    # objects ---------------------------------------------------------------------------------
    def _target(self, parts: list[str]) -> Target:
        if parts[:1] == ["api"] and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        resource = self.registry.lookup(group, version, rest[0])
        if resource is None or len(rest) > 3 or (namespace and not resource.namespaced):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return Target(resource, namespace, rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else "")

    async def _verb(self, request: web.Request, t: Target) -> web.StreamResponse:
        q, r = request.query, t.resource
        if request.method == "GET":
            as_table = tables.wants_table(request.headers.get("Accept", ""))
            include = q.get("includeObject", "Metadata")
            if t.name:
                obj = self.objects.get(r, t.namespace, t.name)
                return _json(tables.table(r, [obj], include=include) if as_table else obj)
            if q.get("watch") in ("1", "true"):
                return await self._watch(request, t)
            listed = self._list(t, q)
            return _json(tables.table(r, listed["items"], listed["metadata"], include=include) if as_table else listed)
        if request.method == "DELETE" and t.name:
            return _json(self.objects.delete(r, t.namespace, t.name, "dryRun" in q))
        # Writes. fieldValidation defaults to Warn, as in Kubernetes.
        opts = {"dry_run": "dryRun" in q, "validation": q.get("fieldValidation", "Warn"), "warnings": []}
        if request.method == "POST" and not t.name:
            obj, status = self.objects.create(r, t.namespace, await _body(request), **opts), 201
        elif request.method == "PUT" and t.name:
            obj, status = self.objects.update(r, t.namespace, t.name, await _body(request), **opts), 200
        elif request.method == "PATCH" and t.name:
            obj, status = self.objects.patch(r, t.namespace, t.name, request.headers.get("Content-Type", ""),
                                             await _body(request), **opts), 200
        else:
            raise ApiError(405, "MethodNotAllowed", f"{request.method} is not supported on {request.path}")
        response = _json(obj, status)
        for warning in opts["warnings"]:
            escaped = warning.replace('"', '\\"')
            response.headers.add("Warning", f'299 - "{escaped}"')
        return response

    def _filter(self, q) -> Callable[[dict], bool]:
        try:
            labels, fields = label_selector(q.get("labelSelector")), field_selector(q.get("fieldSelector"))
        except SelectorError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from None
        return lambda obj: labels(obj) and fields(obj)

    def _list(self, t: Target, q) -> dict:
        r, accepts = t.resource, self._filter(q)
        rv, after = self.store.rv, None
        if q.get("continue"):
            rv, after = _decode_continue(q["continue"])
            if rv < self.store.compacted:
                raise ApiError(410, "Expired", "The provided continue parameter is too old to display a "
                               "consistent list result. You can start a new list without the continue parameter.")
        limit = int(q.get("limit") or 0)
        items, more = [], None
        for stored in self.store.items(r.storage_key, t.namespace or None):
            key = (stored["metadata"].get("namespace", ""), stored["metadata"]["name"])
            if after is not None and key <= after:
                continue
            obj = to_client(r, stored)
            if not accepts(obj):
                continue
            if limit and len(items) == limit:
                more = _encode_continue(rv, last)
                break
            items.append(obj)
            last = key
        meta = {"resourceVersion": str(rv), **({"continue": more} if more else {})}
        return {"kind": f"{r.kind}List", "apiVersion": r.api_version, "metadata": meta, "items": items}

    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        r, accepts, q = t.resource, self._filter(request.query), request.query
        namespace = t.namespace

        def wanted(obj: dict) -> bool:
            return (not namespace or obj["metadata"].get("namespace") == namespace) and accepts(to_client(r, obj))

        watcher = Watcher(r.storage_key, wanted)
        initial = self._initial_events(r, t, q, wanted)
        self.store.add_watcher(watcher)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            await self._stream(response, r, watcher, initial, q,
                               tables.wants_table(request.headers.get("Accept", "")))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.remove_watcher(watcher)
        return response

    def _initial_events(self, r: Resource, t: Target, q, wanted: Callable[[dict], bool]) -> list[dict]:
        rv = q.get("resourceVersion", "")
        if rv in ("", "0") or q.get("sendInitialEvents") == "true":
            events = [{"type": "ADDED", "object": to_client(r, o)}
                      for o in self.store.items(r.storage_key, t.namespace or None) if wanted(o)]
            if q.get("sendInitialEvents") == "true":
                events.append(self._bookmark(r, {"k8s.io/initial-events-end": "true"}))
            return events
        try:
            changes = self.store.changes_since(int(rv), r.storage_key)
        except ValueError:
            raise ApiError(400, "BadRequest", f"invalid resourceVersion {rv!r}") from None
        except Expired as exc:
            # The API server answers 200 and then one ERROR event carrying the 410 Status.
            return [{"type": "ERROR", "object": ApiError(410, "Expired", str(exc)).status()}]
        seen = (c.seen_by(wanted) for c in changes)
        return [{"type": c.type, "object": to_client(r, c.obj)} for c in seen if c is not None]

    def _bookmark(self, r: Resource, annotations: dict | None = None) -> dict:
        meta = {"resourceVersion": str(self.store.rv), **({"annotations": annotations} if annotations else {})}
        return {"type": "BOOKMARK", "object": {"kind": r.kind, "apiVersion": r.api_version, "metadata": meta}}

    async def _stream(self, response: web.StreamResponse, r: Resource, watcher: Watcher,
                      initial: list[dict], q, as_table: bool) -> None:
        headers = [True]

        async def send(event: dict) -> None:
            if as_table and event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                # Column definitions come with the first row only, as the API server sends them.
                event = {**event, "object": tables.table(r, [event["object"]], headers=headers.pop() if headers
                                                         else False, include=q.get("includeObject", "Metadata"))}
            await _write_event(response, event)

        for event in initial:
            await send(event)
            if event["type"] == "ERROR":
                return
        bookmarks = q.get("allowWatchBookmarks") in ("1", "true")
        deadline = time.monotonic() + float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else None
        while True:
            wait = self.bookmark_interval if bookmarks else None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                wait = left if wait is None else min(wait, left)
            try:
                change = await asyncio.wait_for(watcher.queue.get(), wait)
            except asyncio.TimeoutError:
                if bookmarks and watcher.queue.empty():
                    await send(self._bookmark(r))
                continue
            if change is None:
                return
            await send({"type": change.type, "object": to_client(r, change.obj)})


async def _write_event(response: web.StreamResponse, event: dict) -> None:
    await response.write(json.dumps(event).encode() + b"\n")


def _json(obj: dict, status: int = 200) -> web.Response:
    return web.json_response(obj, status=status)


async def _body(request: web.Request):
    raw = await request.read()
    try:
        return json.loads(raw)
    except ValueError:
        pass
    import yaml
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ApiError(400, "BadRequest", f"the request body is neither JSON nor YAML: {exc}") from None


def _encode_continue(rv: int, last: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps({"rv": rv, "after": list(last)}).encode()).decode()


def _decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), (str(data["after"][0]), str(data["after"][1]))
    except (ValueError, KeyError, IndexError, TypeError):
        raise ApiError(400, "BadRequest", "invalid continue token") from None
