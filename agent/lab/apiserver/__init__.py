"""An in-memory Kubernetes API server for the lab and the tests - a lab part, not a product part.

It speaks the real protocol to real clients (kubectl 1.27-1.33, kr8s): discovery (legacy and
aggregated), the OpenAPI documents kubectl reads first, CRDs served as soon as they are created,
get/list/create/update/patch/delete, resourceVersions, watches with bookmarks and 410 Gone after a
compaction. Public API: `server.LabApiServer` (start/stop, compact, drop_watches, pause/resume,
restart, write_kubeconfig) and `server.kubeconfig`.
"""
