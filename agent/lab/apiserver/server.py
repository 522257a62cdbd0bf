"""`LabApiServer`: the in-memory API server on its own thread and event loop, on 127.0.0.1 only.

Test hooks act as the failures a real cluster shows a client: `compact()` (etcd compaction: older
resourceVersions get 410 Gone), `drop_watches()` (streams end), `pause()`/`resume()` (the server is
unreachable: the port refuses connections), `restart()` (streams and connections dropped, state kept).
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from kernsplit.agent.lab.apiserver.app import Handlers
from kernsplit.agent.lab.apiserver.crds import default_crds
from kernsplit.agent.lab.apiserver.objects import Objects
from kernsplit.agent.lab.apiserver.registry import Registry
from kernsplit.agent.lab.apiserver.resources import BUILTINS
from kernsplit.agent.lab.apiserver.store import Store

HOST = "127.0.0.1"
_CRD = next(r for r in BUILTINS if r.kind == "CustomResourceDefinition")


class LabApiServer:
    def __init__(self, port: int = 0, crds: Iterable[dict[str, Any]] | None = None,
                 bookmark_interval: float = 5.0, history: int = 10_000) -> None:
        self.port = port
        self.store = Store(history)
        self.objects = Objects(self.store, Registry())
        for crd in default_crds() if crds is None else crds:
            self.objects.create(_CRD, "", crd)
        self._bookmark_interval = bookmark_interval
        self._paused = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.kubeconfig: Path | None = None      # the last file write_kubeconfig wrote

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # life cycle --------------------------------------------------------------------------------
    def start(self) -> "LabApiServer":
        """Listens and serves on a thread of its own; raises OSError if the port is taken."""
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._listen())
            except OSError as exc:
                failure.append(exc)
                return
            finally:
                ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="lab-apiserver", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            self._thread.join()
            self._loop.close()
            self._loop = None
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> "LabApiServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _listen(self) -> None:
        handlers = Handlers(self.objects, self._bookmark_interval, lambda: f"{HOST}:{self.port}",
                            lambda: self._paused)
        self._runner = web.AppRunner(handlers.app(), handle_signals=False, access_log=None,
                                     shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _close(self) -> None:
        self.store.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _call(self, coro_or_fn):
        """Runs a coroutine or a plain function on the server's loop and returns its result."""
        if asyncio.iscoroutine(coro_or_fn):
            return asyncio.run_coroutine_threadsafe(coro_or_fn, self._loop).result(15)

        async def wrapper():
            return coro_or_fn()
        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(15)

    # test hooks --------------------------------------------------------------------------------
    def compact(self) -> int:
        """Forgets the change history: watches and continues from older versions get 410 Gone."""
        return self._call(self.store.compact)

    def drop_watches(self) -> int:
        return self._call(self.store.drop_watches)

    def pause(self) -> None:
        """Unreachable: the port stops listening and open connections are cut; state is kept."""
        self._paused = True
        self._call(self._close())

    def resume(self) -> None:
        self._paused = False
        self._call(self._listen())

    def restart(self) -> None:
        """As an API server process restarting on the same storage: every stream and connection
        drops, objects and resourceVersions stay."""
        self.pause()
        self.resume()

    # direct access for tests and the lab (same checks as over HTTP, run on the server's loop) ----
    def resource_version(self) -> int:
        return self._call(lambda: self.store.rv)

    def _resource(self, api_version: str, kind: str):
        group, _, version = api_version.rpartition("/")
        found = next((r for r in self.objects.registry.all()
                      if (r.group, r.version, r.kind) == (group, version, kind)), None)
        if found is None:
            raise KeyError(f"{api_version} {kind} is not served")
        return found

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Creates the object, or replaces it if it exists; returns it as stored."""
        r = self._resource(obj["apiVersion"], obj["kind"])
        ns = obj.get("metadata", {}).get("namespace", "default") if r.namespaced else ""

        def put():
            name = obj["metadata"]["name"]
            if self.store.get(r.storage_key, ns, name) is None:
                return self.objects.create(r, ns, obj)
            return self.objects.update(r, ns, name, {**obj, "metadata": {
                k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}})
        return self._call(put)

    def get(self, api_version: str, kind: str, name: str, namespace: str = "default") -> dict[str, Any]:
        r = self._resource(api_version, kind)
        return self._call(lambda: self.objects.get(r, namespace if r.namespaced else "", name))

    def delete(self, api_version: str, kind: str, name: str, namespace: str = "default") -> dict[str, Any]:
        r = self._resource(api_version, kind)
        return self._call(lambda: self.objects.delete(r, namespace if r.namespaced else "", name))

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig whose current context is this server (plain HTTP on 127.0.0.1, no user)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(kubeconfig(self.url, namespace), sort_keys=False))
        self.kubeconfig = path
        return path


def kubeconfig(url: str, namespace: str = "default") -> dict:
    return {"apiVersion": "v1", "kind": "Config", "current-context": "kernsplit-lab",
            "clusters": [{"name": "kernsplit-lab", "cluster": {"server": url}}],
            "users": [{"name": "kernsplit-lab", "user": {}}],
            "contexts": [{"name": "kernsplit-lab",
                          "context": {"cluster": "kernsplit-lab", "user": "kernsplit-lab", "namespace": namespace}}],
            "preferences": {}}
