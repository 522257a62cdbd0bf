"""TrafficSplit in every SMI version and the seed's shape: parsing, weights, exact error texts."""
import textwrap

import pytest

from kernsplit.agent.model import load_config


def load(tmp_path, text, name="split.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path), load_config([path])


def split(version, backends, extra=""):
    return f"""\
apiVersion: split.smi-spec.io/{version}
kind: TrafficSplit
metadata: {{name: my-app-split, namespace: default}}
spec:
  service: my-app
  backends:
{backends}{extra}"""


def weights(config):
    [parsed] = config.splits
    return [(b.service, b.weight) for b in parsed.backends]


def test_v1alpha1_quantities_are_milli_units(tmp_path):
    _, config = load(tmp_path, split("v1alpha1", "  - {service: v1, weight: 1}\n  - {service: v2, weight: 500m}\n"
                                                 "  - {service: v3, weight: 1.5}\n  - {service: v4, weight: 0m}\n"))
    assert weights(config) == [("v1", 1000), ("v2", 500), ("v3", 1500), ("v4", 0)]
    assert config.splits[0].weight_unit == "milli"
    assert config.errors == ()


@pytest.mark.parametrize("version", ["v1alpha2", "v1alpha3", "v1alpha4"])
def test_later_versions_take_whole_numbers(tmp_path, version):
    _, config = load(tmp_path, split(version, "  - {service: v1, weight: 90}\n  - {service: v2, weight: 10}\n"))
    assert weights(config) == [("v1", 90), ("v2", 10)]
    assert config.splits[0].weight_unit == "integer"


def test_seed_shape_with_quantities_whatever_the_version(tmp_path):
    _, config = load_config_seed(tmp_path)
    [parsed] = config.splits
    assert (parsed.kind, parsed.namespace, parsed.name, parsed.service) == (
        "TrafficSplit", "default", "my-app-split", "my-app")
    assert weights(config) == [("my-app-v1", 900), ("my-app-v2", 100)]


def load_config_seed(tmp_path):
    return "tests/unit/manifests/seed", load_config(["tests/unit/manifests/seed"])


def test_seed_shape_accepts_weight_nested_under_backend(tmp_path):
    _, config = load(tmp_path, """\
        apiVersion: split.smi-spec.io/v1alpha2
        kind: TrafficSplit
        metadata: {name: s}
        spec:
          service: my-app
          trafficRouting:
          - backend: {serviceName: my-app-v1, weight: 0m}
          - backend: {serviceName: my-app-v2, weight: 1000m}
        """)
    assert weights(config) == [("my-app-v1", 0), ("my-app-v2", 1000)]


@pytest.mark.parametrize("version", ["v1alpha3", "v1alpha4"])
def test_matches_are_parsed_and_reported_as_not_enforced(tmp_path, version):
    path, config = load(tmp_path, split(version, "  - {service: v1, weight: 1}\n",
                                        "  matches:\n  - {kind: HTTPRouteGroup, name: canary-headers}\n"))
    assert [str(d) for d in config.warnings if d.field == "spec.matches"] == [
        f"{path}: TrafficSplit default/my-app-split: spec.matches: L7 matches are not enforced by a kernel "
        "dataplane: the split applies to every connection"]
    assert not config.has_errors and len(config.splits) == 1


def test_missing_namespace_means_default(tmp_path):
    _, config = load(tmp_path, "apiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\nmetadata: {name: s}\n"
                               "spec: {service: a, backends: [{service: b, weight: 1}]}\n")
    assert config.splits[0].namespace == "default"


ERRORS = [
    ("v1alpha2", "  - {service: v1, weight: 1}\n  - {service: v2, weight: -5}\n",
     'spec.backends[1].weight: "-5" is negative'),
    ("v1alpha1", "  - {service: v1, weight: 9x}\n",
     'spec.backends[0].weight: "9x" is not a quantity (expected e.g. 900m, 1, 1.5)'),
    ("v1alpha1", "  - {service: v1, weight: \"-500m\"}\n", 'spec.backends[0].weight: "-500m" is negative'),
    ("v1alpha2", "  - {service: v1, weight: 900m}\n",
     'spec.backends[0].weight: "900m" is not a whole number (split.smi-spec.io/v1alpha2 weights are whole '
     'numbers; quantities like 900m are v1alpha1)'),
    ("v1alpha4", "  - {service: v1, weight: abc}\n",
     'spec.backends[0].weight: "abc" is not a whole number (split.smi-spec.io/v1alpha4 weights are whole '
     'numbers; quantities like 900m are v1alpha1)'),
    ("v1alpha2", "  - {service: v1}\n", "spec.backends[0].weight: is required"),
    ("v1alpha2", "  - {weight: 5}\n", "spec.backends[0].service: is required"),
    ("v1alpha2", "  - {service: v1, weight: 1}\n  - {service: v1, weight: 2}\n",
     'spec.backends[1].service: "v1" is listed twice (first at spec.backends[0].service)'),
    ("v1alpha2", "    []\n", "spec.backends: is required (at least one backend)"),
    ("v1alpha2", "  - just-a-name\n", "spec.backends[0]: must be a mapping"),
]


@pytest.mark.parametrize("version, backends, expected", ERRORS)
def test_each_error_names_file_object_field_and_excludes_the_document(tmp_path, version, backends, expected):
    path, config = load(tmp_path, split(version, backends))
    assert [str(d) for d in config.errors] == [f"{path}: TrafficSplit default/my-app-split: {expected}"]
    assert config.splits == () and config.has_errors


def test_missing_service_and_backends(tmp_path):
    path, config = load(tmp_path, "apiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\n"
                                  "metadata: {name: s, namespace: shop}\nspec: {}\n")
    assert [str(d) for d in config.errors] == [
        f"{path}: TrafficSplit shop/s: spec.service: is required",
        f"{path}: TrafficSplit shop/s: spec.backends: is required"]


def test_seed_shape_errors_point_at_the_seed_fields(tmp_path):
    path, config = load(tmp_path, """\
        apiVersion: split.smi-spec.io/v1alpha2
        kind: TrafficSplit
        metadata: {name: s}
        spec:
          service: my-app
          trafficRouting:
          - backend: {serviceName: my-app-v1}
            weight: 9x
          - backend: {}
            weight: 1
        """)
    assert [str(d) for d in config.errors] == [
        f'{path}: TrafficSplit default/s: spec.trafficRouting[0].weight: "9x" is not a quantity (expected e.g. '
        '900m, 1, 1.5)',
        f"{path}: TrafficSplit default/s: spec.trafficRouting[1].backend.serviceName: is required"]


def test_unsupported_smi_version_is_a_warning_and_other_groups_are_ignored(tmp_path):
    path, config = load(tmp_path, split("v1beta9", "  - {service: v1, weight: 1}\n") + "---\n"
                        "apiVersion: example.com/v1\nkind: TrafficSplit\nmetadata: {name: foreign}\nspec: {}\n")
    assert [str(d) for d in config.diagnostics] == [
        f'{path}: TrafficSplit default/my-app-split: apiVersion: "split.smi-spec.io/v1beta9" is not a supported '
        "version (v1alpha1, v1alpha2, v1alpha3, v1alpha4); ignored"]
    assert config.splits == ()


def test_an_error_in_one_split_leaves_the_others(tmp_path):
    _, config = load(tmp_path, split("v1alpha2", "  - {service: v1, weight: -1}\n") + "---\n"
                     + split("v1alpha2", "  - {service: v1, weight: 1}\n").replace("my-app-split", "other"))
    assert [s.name for s in config.splits] == ["other"]
