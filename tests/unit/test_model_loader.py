"""Reading manifests: files, directories, multi-document YAML, List, JSON, syntax errors."""
import json
import os
import textwrap

from kernsplit.agent.model import load_config

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {{name: {name}{ns}}}
spec:
  clusterIP: {ip}
  ports: [{{port: 80, targetPort: 8080}}]
"""


def service(name, ip, namespace=None):
    return SERVICE.format(name=name, ip=ip, ns=f", namespace: {namespace}" if namespace else "")


def write(base, relative, text):
    path = base / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


def names(config):
    return sorted(f"{s.namespace}/{s.name}" for s in config.services)


def test_directories_are_read_recursively_and_only_manifest_suffixes(tmp_path):
    write(tmp_path, "a.yaml", service("a", "10.0.0.1"))
    write(tmp_path, "sub/deeper/b.yml", service("b", "10.0.0.2"))
    write(tmp_path, "sub/c.json", json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "c"},
                                              "spec": {"clusterIP": "10.0.0.3", "ports": [{"port": 80}]}}))
    write(tmp_path, "notes.txt", service("ignored", "10.0.0.4"))
    write(tmp_path, ".hidden/d.yaml", service("hidden", "10.0.0.5"))
    write(tmp_path, ".swap.yaml", service("swap", "10.0.0.6"))
    config = load_config([tmp_path])
    assert names(config) == ["default/a", "default/b", "default/c"]
    assert config.diagnostics == ()


def test_a_file_named_explicitly_is_read_whatever_its_suffix(tmp_path):
    path = write(tmp_path, "manifest.txt", service("a", "10.0.0.1"))
    assert names(load_config([path])) == ["default/a"]


def test_a_single_path_string_is_accepted(tmp_path):
    path = write(tmp_path, "a.yaml", service("a", "10.0.0.1"))
    assert names(load_config(path)) == ["default/a"]


def test_multi_document_yaml_with_empty_documents_and_unknown_kinds(tmp_path):
    path = write(tmp_path, "all.yaml", "---\n" + service("a", "10.0.0.1", "shop") + "---\n---\n# comment only\n---\n"
                 "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: my-app-v1}\n---\n"
                 "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n---\n"
                 + service("b", "10.0.0.2"))
    config = load_config([path])
    assert names(config) == ["default/b", "shop/a"]
    assert config.diagnostics == ()


def test_kind_list_items_are_objects(tmp_path):
    items = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": n, "namespace": "x"},
              "spec": {"clusterIP": ip, "ports": [{"port": 80}]}}
             for n, ip in (("a", "10.0.0.1"), ("b", "10.0.0.2"))]
    path = write(tmp_path, "dump.json", json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    assert names(load_config([path])) == ["x/a", "x/b"]


def test_errors_inside_a_list_item_name_the_item_and_its_index(tmp_path):
    path = write(tmp_path, "dump.yaml", """\
        apiVersion: v1
        kind: List
        items:
        - {apiVersion: v1, kind: Service, metadata: {name: ok}, spec: {ports: [{port: 80}]}}
        - {apiVersion: v1, kind: Service, metadata: {name: bad}, spec: {ports: [{port: 0}]}}
        """)
    config = load_config([path])
    assert [str(d) for d in config.errors] == [
        f'{path}: Service default/bad: items[1].spec.ports[0].port: "0" is not a valid port (1-65535)']
    assert names(config) == ["default/ok"]


def test_yaml_syntax_error_names_file_document_and_line_and_keeps_earlier_documents(tmp_path):
    path = write(tmp_path, "broken.yaml", service("a", "10.0.0.1") + "---\nkind: Service\nmetadata:\n  name: b\n   bad: indent\n")
    config = load_config([path])
    assert names(config) == ["default/a"]
    [error] = config.errors
    assert error.file == path and error.obj == "document 2"
    assert error.field == "line 11, column 7"   # the over-indented line
    # libyaml says "... in this context", the pure-Python parser "... here"
    assert error.message.startswith("YAML syntax error: mapping values are not allowed")
    assert config.has_errors


def test_json_syntax_error_names_line(tmp_path):
    path = write(tmp_path, "broken.json", '{\n  "kind": "Service",\n  "metadata": {\n}\n')
    [error] = load_config([path]).errors
    assert (error.file, error.obj) == (path, "document 1")
    assert error.field.startswith("line ") and error.message.startswith("JSON syntax error: ")


def test_missing_path_is_an_error(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    config = load_config([missing])
    assert [str(d) for d in config.errors] == [f"{missing}: no such file or directory"]


def test_a_document_that_is_not_a_mapping_is_an_error(tmp_path):
    path = write(tmp_path, "odd.yaml", "- just\n- a list\n---\nplain text\n")
    config = load_config([path])
    assert [str(d) for d in config.errors] == [
        f"{path}: document 1: is a list, not a Kubernetes object (a mapping with apiVersion and kind)",
        f"{path}: document 2: is a string, not a Kubernetes object (a mapping with apiVersion and kind)"]


def test_same_object_twice_is_an_error_and_the_first_copy_is_kept(tmp_path):
    first = write(tmp_path, "a.yaml", service("a", "10.0.0.1"))
    second = write(tmp_path, "b.yaml", service("a", "10.0.0.9"))
    config = load_config([first, second])
    assert [str(d) for d in config.errors] == [
        f"{second}: Service default/a: metadata.name: is defined twice (first in {first} document 1)"]
    assert config.services[0].cluster_ips == ("10.0.0.1",)


def test_paths_in_diagnostics_are_as_the_user_gave_them(tmp_path):
    write(tmp_path, "deploy/split.yaml", service("a", "10.0.0.300"))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        [error] = load_config(["deploy"]).errors
    finally:
        os.chdir(cwd)
    assert str(error) == 'deploy/split.yaml: Service default/a: spec.clusterIP: "10.0.0.300" is not an IP address'


def test_typed_lists_from_the_api_give_their_items_a_kind(tmp_path):
    path = write(tmp_path, "services.json", json.dumps({
        "apiVersion": "v1", "kind": "ServiceList",
        "items": [{"metadata": {"name": "a"}, "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}}]}))
    assert names(load_config([path])) == ["default/a"]
