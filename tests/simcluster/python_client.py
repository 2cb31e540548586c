"""The official Kubernetes Python client against the simulated cluster:
create, read, list by label, patch (merge and JSON), replace with a stale
resourceVersion (409), watch (with bookmarks when asked), server-side apply
conflicts, delete (404 after).
Exits non-zero on the first difference from what the Kubernetes documentation
says."""

import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
apps = client.AppsV1Api()
custom = client.CustomObjectsApi()
NS = "default"


def expect_status(code, call):
    try:
        call()
    except ApiException as e:
        assert e.status == code, f"expected {code}, got {e.status}: {e.body}"
        return e
    raise AssertionError(f"expected an error {code}")


body = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "py-reviews", "labels": {"app": "py-reviews"}},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "py-reviews"}},
        "template": {
            "metadata": {"labels": {"app": "py-reviews", "version": "v1"}},
            "spec": {"containers": [{"name": "r", "image": "reviews:1"}]},
        },
    },
}

events = []
def watcher():
    w = watch.Watch()
    for event in w.stream(apps.list_namespaced_deployment, NS, label_selector="app=py-reviews", timeout_seconds=5):
        events.append((event["type"], event["object"].metadata.name))
thread = threading.Thread(target=watcher)
thread.start()

created = apps.create_namespaced_deployment(NS, body)
assert created.metadata.generation == 1, created.metadata
read = apps.read_namespaced_deployment("py-reviews", NS)
assert read.spec.replicas == 2
listed = apps.list_namespaced_deployment(NS, label_selector="app=py-reviews")
assert [d.metadata.name for d in listed.items] == ["py-reviews"]
assert apps.list_namespaced_deployment(NS, label_selector="app=nothing").items == []

patched = apps.patch_namespaced_deployment("py-reviews", NS, {"spec": {"replicas": 3}})
assert patched.spec.replicas == 3 and patched.metadata.generation == 2
stale = created
stale.spec.replicas = 9
e = expect_status(409, lambda: apps.replace_namespaced_deployment("py-reviews", NS, stale))
assert "Conflict" in e.body

vs = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "py-vs"},
    "spec": {"hosts": ["py-reviews"], "http": [{"route": [{"destination": {"host": "py-reviews"}}]}]},
}
custom.create_namespaced_custom_object("networking.istio.io", "v1", NS, "virtualservices", vs)
got = custom.get_namespaced_custom_object("networking.istio.io", "v1beta1", NS, "virtualservices", "py-vs")
assert got["apiVersion"] == "networking.istio.io/v1beta1" and got["spec"] == vs["spec"]

thread.join()
kinds = [k for k, _ in events]
assert kinds[:2] == ["ADDED", "MODIFIED"], events

# Bookmarks when asked (kube-rs and client-go ask), as the API server sends
# them: at a version later than the list's, before the watch times out.
listed_at = int(apps.list_namespaced_deployment(NS).metadata.resource_version)
marks = []
for event in watch.Watch().stream(apps.list_namespaced_deployment, NS, label_selector="app=py-reviews",
                                  resource_version=str(listed_at), allow_watch_bookmarks=True,
                                  timeout_seconds=1):
    marks.append((event["type"], event["raw_object"]["metadata"]["resourceVersion"]))
assert marks and marks[-1][0] == "BOOKMARK" and int(marks[-1][1]) >= listed_at, marks

apps.delete_namespaced_deployment("py-reviews", NS)
expect_status(404, lambda: apps.read_namespaced_deployment("py-reviews", NS))
custom.delete_namespaced_custom_object("networking.istio.io", "v1", NS, "virtualservices", "py-vs")
print("python client: every check passed")
