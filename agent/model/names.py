"""Object names as the Kubernetes API server validates them, and Service references by DNS name.

The API server refuses a Service whose name is not a DNS-1035 label, a namespace that is not a
DNS-1123 label, and most other objects (TrafficSplits, routes, EndpointSlices) whose name is not a
DNS-1123 subdomain. A manifest the API server would refuse is an error here too: names end up in
kernel comments, map entries and log lines, so `a;rm -rf /` or `--jump` must never get that far.

SMI calls the root service "the FQDN that applications will use to communicate", and OSM's
manifests write `bookstore.bookstore`; so a Service reference may be `name`, `name.ns`,
`name.ns.svc` or `name.ns.svc.<cluster domain>`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_CLUSTER_DOMAIN = "cluster.local"

_LABEL_1123 = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL = re.compile(_LABEL_1123)
_DNS1123_SUBDOMAIN = re.compile(rf"{_LABEL_1123}(\.{_LABEL_1123})*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
LABEL_MAX = 63
SUBDOMAIN_MAX = 253


@dataclass(frozen=True)
class NameRule:
    what: str              # "DNS-1035 label"
    pattern: re.Pattern
    max_len: int
    explain: str           # what the API server says the characters must be


DNS1035_LABEL = NameRule("DNS-1035 label", _DNS1035_LABEL, LABEL_MAX,
                         "lower case alphanumeric characters or '-', starting with a letter and ending "
                         "with an alphanumeric character")
DNS1123_LABEL = NameRule("DNS-1123 label", _DNS1123_LABEL, LABEL_MAX,
                         "lower case alphanumeric characters or '-', starting and ending with an "
                         "alphanumeric character")
DNS1123_SUBDOMAIN = NameRule("DNS-1123 subdomain", _DNS1123_SUBDOMAIN, SUBDOMAIN_MAX,
                             "lower case alphanumeric characters, '-' or '.', starting and ending with "
                             "an alphanumeric character")
SERVICE_NAME = DNS1035_LABEL
NAMESPACE_NAME = DNS1123_LABEL


def name_problem(value: str, rule: NameRule) -> str | None:
    """Why `value` is not a valid name under `rule` (as the API server would say), or None."""
    if len(value) > rule.max_len:
        return f"is {len(value)} characters long: a {rule.what} has at most {rule.max_len}"
    if not value.isascii() or rule.pattern.fullmatch(value) is None:
        return f'"{_printable(value)}" is not a valid {rule.what}: it must consist of {rule.explain}'
    return None


def _printable(value: str) -> str:
    return value.encode("unicode_escape").decode("ascii")


@dataclass(frozen=True)
class ServiceRef:
    name: str
    namespace: str | None     # None when the reference named no namespace


def service_ref(value: str, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> ServiceRef | str:
    """Parse `name`, `name.ns`, `name.ns.svc` or `name.ns.svc.<cluster_domain>` (a trailing dot
    allowed on the last); returns the reference, or a message saying why it is not one."""
    parts = value[:-1].split(".") if value.endswith(".") and value.count(".") >= 3 else value.split(".")
    domain = cluster_domain.strip(".")
    if len(parts) > 3 and (parts[2] != "svc" or ".".join(parts[3:]) != domain):
        return (f'"{_printable(value)}" is not a Service name, name.namespace, name.namespace.svc or '
                f"name.namespace.svc.{domain} (cluster domain {domain}; see --cluster-domain)")
    if len(parts) == 3 and parts[2] != "svc":
        return f'"{_printable(value)}" is not a Service name, name.namespace or name.namespace.svc'
    problem = name_problem(parts[0], SERVICE_NAME)
    if problem is not None:
        return problem
    namespace = parts[1] if len(parts) > 1 else None
    if namespace is not None:
        problem = name_problem(namespace, NAMESPACE_NAME)
        if problem is not None:
            return f"namespace {problem}"
    return ServiceRef(parts[0], namespace)
