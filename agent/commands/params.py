"""Click parameter types shared by the commands (`kernsplit *` and `proxy-init`)."""
from __future__ import annotations

import click

from kernsplit.agent.model.names import DEFAULT_CLUSTER_DOMAIN, DNS1123_SUBDOMAIN, name_problem
from kernsplit.agent.netns import netns_path


class NetnsParam(click.ParamType):
    """A network namespace: a name under /var/run/netns or a path. It must exist: a typo must not
    silently fall back to planning against an empty table."""

    name = "NAME_OR_PATH"

    def convert(self, value, param, ctx):
        if value is None or value == "":
            return None
        problem = missing_netns(value)
        if problem:
            self.fail(problem, param, ctx)
        return str(value)


def missing_netns(value: str) -> str | None:
    """Why the namespace cannot be used, or None when it exists."""
    path = netns_path(value)
    if path is None or path.exists():
        return None
    hint = "" if "/" in str(value) else f" (no {path}; create it with `ip netns add {value}` or pass a path)"
    return f"network namespace {value!r} not found{hint}"


NETNS = NetnsParam()


class ClusterDomainParam(click.ParamType):
    """The cluster's DNS domain (kubelet's --cluster-domain): a DNS-1123 subdomain."""

    name = "DOMAIN"

    def convert(self, value, param, ctx):
        domain = str(value).strip(".")
        problem = name_problem(domain, DNS1123_SUBDOMAIN)
        if problem:
            self.fail(problem, param, ctx)
        return domain


CLUSTER_DOMAIN = ClusterDomainParam()


def cluster_domain_option(func):
    return click.option("--cluster-domain", type=CLUSTER_DOMAIN, default=DEFAULT_CLUSTER_DOMAIN, show_default=True,
                        help="The cluster's DNS domain: completes Service DNS names in splits "
                             "(name.namespace.svc.DOMAIN).")(func)


def iptables_wait_option(func):
    """`--iptables-wait`, the same for the agent and proxy-init."""
    from kernsplit.agent.iptables.xlock import DEFAULT_WAIT
    return click.option("--iptables-wait", type=click.IntRange(min=1), default=DEFAULT_WAIT, show_default=True,
                        metavar="SECONDS",
                        help="iptables-legacy: wait at most this long for the xtables lock held by another "
                             "program (iptables-restore --wait); then this write fails naming the lock, and "
                             "nothing is written.")(func)
