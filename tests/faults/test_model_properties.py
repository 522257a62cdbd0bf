"""Bad input stays a clear error, with nothing lost: property-based tests (hypothesis) of the
manifest parser and the weight normaliser.

- No input crashes the parser: any text in a manifest file, any JSON-shaped object, and any value
  in any field of a TrafficSplit or route gives a `Config` whose problems are diagnostics naming
  the file; the weight parsers raise `WeightError` and nothing else.
- Normalised shares sum exactly to the whole: the model's shares of each split port sum to 1,
  the eBPF table's counts to 2**32, and weight 0 is never selected, by either dataplane.
"""
from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernsplit.agent.dataplane.ebpf import plan as ebpf_plan
from kernsplit.agent.dataplane.ebpf import thresholds as table
from kernsplit.agent.dataplane.iptables import comments, probability
from kernsplit.agent.dataplane.iptables.plan import port_plan
from kernsplit.agent.model import load_config
from kernsplit.agent.model.quantity import MAX_WEIGHT, WeightError, parse_quantity, parse_whole

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# --- inputs ---------------------------------------------------------------------------------

numbers = st.one_of(
    st.integers(), st.decimals(allow_nan=True, allow_infinity=True),
    # Exponents far past any weight: the parser must refuse them without building the number.
    st.builds(lambda m, e: Decimal(f"{m}E{e}"), st.integers(-99, 99), st.integers(-10**9, 10**9)))
weight_texts = st.one_of(
    st.text(max_size=12),
    st.from_regex(r"\A[+-]?(\d{1,12}(\.\d{0,4})?|\.\d{1,4})([eE][+-]?\d{1,12}|Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?\Z"))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20), weight_texts)
json_like = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=20)

NAMES = ["my-app", "my-app-v1", "my-app-v2", "", "My_App", "a" * 70, "my-app.default.svc.cluster.local"]
SMI_VERSIONS = [f"split.smi-spec.io/{v}" for v in ("v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4", "v9")]
ROUTE_VERSIONS = ["gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1alpha2",
                  "policy.linkerd.io/v1beta3"]


def maybe(good):
    """A field's value: usually a plausible one, sometimes anything at all."""
    return st.one_of(good, good, good, json_like)


names = maybe(st.sampled_from(NAMES))
weights = maybe(st.one_of(st.integers(-5, 2 * MAX_WEIGHT), weight_texts, numbers))


@st.composite
def traffic_splits(draw):
    backend = st.fixed_dictionaries({"service": names, "weight": weights})
    seed_backend = st.fixed_dictionaries({"backend": maybe(st.fixed_dictionaries({"serviceName": names})),
                                          "weight": weights})
    spec = draw(st.one_of(
        st.fixed_dictionaries({"service": names, "backends": maybe(st.lists(backend, max_size=4))}),
        st.fixed_dictionaries({"service": names, "trafficRouting": maybe(st.lists(seed_backend, max_size=4))},
                              optional={"matches": json_like})))
    return {"apiVersion": draw(st.sampled_from(SMI_VERSIONS)), "kind": "TrafficSplit",
            "metadata": draw(maybe(st.fixed_dictionaries({"name": names}, optional={
                "namespace": names, "creationTimestamp": maybe(st.just("2026-01-01T00:00:00Z"))}))),
            "spec": draw(maybe(st.just(spec)))}


@st.composite
def routes(draw):
    ref = st.fixed_dictionaries({"name": names}, optional={"port": maybe(st.integers(0, 70000)),
                                                           "weight": weights, "kind": json_like,
                                                           "group": json_like})
    rule = st.fixed_dictionaries({}, optional={"backendRefs": maybe(st.lists(ref, max_size=4)),
                                               "matches": json_like})
    parent = st.fixed_dictionaries({"name": names}, optional={
        "kind": maybe(st.just("Service")), "group": maybe(st.just("core")), "port": maybe(st.integers(0, 70000)),
        "sectionName": names})
    return {"apiVersion": draw(st.sampled_from(ROUTE_VERSIONS)), "kind": draw(st.sampled_from(["HTTPRoute", "TCPRoute"])),
            "metadata": {"name": draw(names)},
            "spec": draw(maybe(st.fixed_dictionaries({"parentRefs": maybe(st.lists(parent, max_size=2)),
                                                      "rules": maybe(st.lists(rule, max_size=2))})))}


@st.composite
def services(draw):
    port = st.fixed_dictionaries({"port": maybe(st.integers(0, 70000))},
                                 optional={"name": names, "protocol": maybe(st.sampled_from(["TCP", "UDP"])),
                                           "targetPort": maybe(st.one_of(st.integers(0, 70000), st.just("http")))})
    ip = maybe(st.sampled_from(["10.0.0.1", "fd00::1", "None", "", "300.1.1.1"]))
    spec = st.fixed_dictionaries({}, optional={"clusterIP": ip, "clusterIPs": maybe(st.lists(ip, max_size=2)),
                                               "ports": maybe(st.lists(port, max_size=3))})
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": draw(names)}, "spec": draw(maybe(spec))}


@st.composite
def endpoints(draw):
    address = st.fixed_dictionaries({"ip": maybe(st.sampled_from(["10.1.0.1", "fd00::2", "x"]))})
    port = st.fixed_dictionaries({"port": maybe(st.integers(0, 70000))}, optional={"name": names})
    subset = st.fixed_dictionaries({}, optional={"addresses": maybe(st.lists(address, max_size=3)),
                                                 "notReadyAddresses": maybe(st.lists(address, max_size=2)),
                                                 "ports": maybe(st.lists(port, max_size=2))})
    if draw(st.booleans()):
        return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": draw(names)},
                "subsets": draw(maybe(st.lists(subset, max_size=2)))}
    endpoint = st.fixed_dictionaries({"addresses": maybe(st.lists(st.sampled_from(["10.1.0.1", "fd00::2"]), max_size=2))},
                                     optional={"conditions": maybe(st.fixed_dictionaries(
                                         {}, optional={"ready": json_like, "serving": json_like,
                                                       "terminating": json_like}))})
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": draw(maybe(st.fixed_dictionaries({"name": names}, optional={
                "labels": maybe(st.fixed_dictionaries({"kubernetes.io/service-name": names}))}))),
            "addressType": draw(maybe(st.sampled_from(["IPv4", "IPv6", "FQDN"]))),
            "endpoints": draw(maybe(st.lists(endpoint, max_size=2))),
            "ports": draw(maybe(st.lists(port, max_size=2)))}


documents = st.one_of(traffic_splits(), routes(), services(), endpoints(), json_like)


def _json_default(value):
    if isinstance(value, Decimal):
        return str(value)     # json.dumps cannot write Decimal; the text is what a user would write
    raise TypeError(value)


def _check_config(config, file: Path) -> None:
    for d in config.diagnostics:
        assert d.file == str(file), d
        assert d.severity in ("error", "warning", "info")
        assert str(d)
    for sp in config.split_ports:
        assert sum(c.share for c in sp.choices) == 1, sp


# --- the parser never crashes -----------------------------------------------------------------

@SETTINGS
@given(text=st.text(max_size=300) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_any_text_in_a_manifest_file_is_a_diagnostic_not_a_crash(tmp_path_factory, text):
    for suffix in (".yaml", ".json"):
        file = tmp_path_factory.mktemp("m") / f"any{suffix}"
        file.write_text(text, encoding="utf-8", errors="surrogatepass")
        _check_config(load_config([file]), file)


@SETTINGS
@given(docs=st.lists(documents, min_size=1, max_size=5), as_json=st.booleans())
def test_any_objects_are_diagnostics_not_a_crash(tmp_path_factory, docs, as_json):
    folder = tmp_path_factory.mktemp("m")
    if as_json:
        file = folder / "objects.json"
        file.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}, default=_json_default))
    else:
        file = folder / "objects.yaml"
        file.write_text(yaml.safe_dump_all(json.loads(json.dumps(docs, default=_json_default))))
    _check_config(load_config([file]), file)


@SETTINGS
@given(value=st.one_of(scalars, json_like))
def test_the_weight_parsers_raise_only_weight_error(value):
    for parse in (parse_quantity, parse_whole):
        if isinstance(value, float):
            continue
        try:
            result = parse(value)
        except WeightError as exc:
            assert str(exc).startswith('"'), exc    # names the value as written
        else:
            assert isinstance(result, int) and 0 <= result <= MAX_WEIGHT


# --- shares are exact; weight 0 is never selected -----------------------------------------------

BACKENDS = ["v1", "v2", "v3", "v4"]


@st.composite
def weighted_configs(draw):
    """A root with endpoints, and up to 4 backends with any weights, some without endpoints."""
    kind = draw(st.sampled_from(["TrafficSplit", "HTTPRoute"]))
    n = draw(st.integers(1, 4))
    ws = draw(st.lists(st.one_of(st.just(0), st.integers(0, 10), st.integers(0, 10**6)), min_size=n, max_size=n))
    counts = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    docs = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "root"},
             "spec": {"clusterIP": "10.100.0.1", "ports": [{"port": 80, "targetPort": 8080}]}},
            _endpoints("root", ["10.2.0.1"])]
    for i, (name, count) in enumerate(zip(BACKENDS, counts)):
        docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                     "spec": {"clusterIP": f"10.100.1.{i}", "ports": [{"port": 80, "targetPort": 8080}]}})
        docs.append(_endpoints(name, [f"10.3.{i}.{k}" for k in range(count)]))
    if kind == "TrafficSplit":
        docs.append({"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit", "metadata": {"name": "s"},
                     "spec": {"service": "root", "backends": [{"service": b, "weight": w}
                                                              for b, w in zip(BACKENDS, ws)]}})
    else:
        docs.append({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "r"},
                     "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "root", "port": 80}],
                              "rules": [{"backendRefs": [{"name": b, "port": 80, "weight": w}
                                                         for b, w in zip(BACKENDS, ws)]}]}})
    return docs, dict(zip(BACKENDS, ws))


def _endpoints(name: str, ips: list[str]) -> dict:
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name},
            "subsets": [{"addresses": [{"ip": ip} for ip in ips], "ports": [{"port": 8080}]}] if ips else []}


@SETTINGS
@given(config=weighted_configs())
def test_shares_sum_to_the_whole_and_weight_0_is_never_selected(tmp_path_factory, config):
    docs, weights = config
    file = tmp_path_factory.mktemp("m") / "split.yaml"
    file.write_text(yaml.safe_dump_all(docs))
    loaded = load_config([file])
    assert not loaded.has_errors, loaded.errors
    (sp,) = loaded.split_ports
    zero = {b for b, w in weights.items() if w == 0}
    # The model: exact shares, summing to 1; weight 0 gets no endpoint and no refusal.
    assert sum(c.share for c in sp.choices) == 1
    assert all(c.share > 0 for c in sp.choices)
    assert not zero & {c.backend for c in sp.choices}
    # iptables: the chain's rules DNAT or refuse for positive-weight backends only, and the
    # conditional probabilities chain up to exactly 1.
    slots = port_plan(sp).chain.rules[1:]
    assert len(slots) == len(sp.choices)
    for rule in slots:
        (slot,) = comments.decode_rule(rule.args)
        assert slot.backend not in zero, rule
    assert probability.conditional_probabilities([c.share for c in sp.choices])[-1] == 1
    # eBPF: the table splits the 2**32 random values exactly, and no value lands on weight 0.
    img = ebpf_plan.image(sp)
    lasts = [s.last for s in img.slots]
    assert lasts[-1] == table.SPACE - 1 and lasts == sorted(set(lasts))
    chosen = {img.meta.backends[s.backend].name for s in img.slots}
    assert not zero & chosen
    assert sum(table.counts([c.share for c in sp.choices])) == table.SPACE


@SETTINGS
@given(shares=st.lists(st.fractions(min_value=Fraction(1, 10**12), max_value=10**6), min_size=1, max_size=50))
def test_table_counts_sum_to_2_32_and_give_every_share_a_value(shares):
    counts = table.counts(shares)
    assert sum(counts) == table.SPACE
    assert all(c >= 1 for c in counts)
    total = sum(shares)
    for share, count in zip(shares, counts):   # within one value of exact, unless lifted from 0
        assert abs(Fraction(count) - share / total * table.SPACE) < len(shares) + 1


HUGE = ["1e999999999", "1.0e+999999999", "-1.5E+2147483648", "9" * 5000, "1e-999999999"]


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
@pytest.mark.parametrize("version", ["v1alpha1", "v1alpha2"])
@pytest.mark.parametrize("weight", HUGE)
def test_a_huge_weight_is_refused_at_once(tmp_path, weight, version, suffix):
    """`1.0e+999999999` is a number to YAML and JSON; building it exactly would take the agent's
    memory and minutes. It must be a plain error naming the file and field, and nothing else."""
    file = tmp_path / f"split{suffix}"
    file.write_text(f'{{"apiVersion": "split.smi-spec.io/{version}", "kind": "TrafficSplit", '
                    f'"metadata": {{"name": "s"}}, "spec": {{"service": "root", '
                    f'"backends": [{{"service": "v1", "weight": {weight}}}]}}}}')
    loaded = load_config([file])
    (error,) = loaded.errors
    assert error.file == str(file), error
    assert error.field in ("spec.backends[0].weight", "-"), error
