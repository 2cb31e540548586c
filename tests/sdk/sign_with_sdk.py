"""Signs real REST requests with the cloud's official Python SDK core
(huaweicloudsdkcore: BasicCredentials.sign_request, the SDK-HMAC-SHA256
signer) and sends them as the SDK's HTTP client does (requests, the signed
headers, the signed URI). Exits non-zero on the first unexpected answer.

Usage: sign_with_sdk.py BASE_URL ACCESS_KEY SECRET_KEY
"""

import json
import sys
import uuid
from urllib.parse import urlparse

import requests
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest

BASE, AK, SK = sys.argv[1], sys.argv[2], sys.argv[3]
MESH = "demo-mesh"
session = requests.Session()


def call(method, path, query=None, body=None, sk=SK, extra_headers=None):
    url = urlparse(BASE)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    headers.update(extra_headers or {})
    request = SdkRequest(
        method=method,
        schema=url.scheme,
        host=url.netloc,
        resource_path=path,
        query_params=list((query or {}).items()),
        header_params=headers,
        body=json.dumps(body) if body is not None else "",
    )
    signed = BasicCredentials(AK, sk).sign_request(request)
    return send(method, signed)


def send(method, signed):
    response = getattr(session, method.lower())(
        signed.url, headers=signed.header_params, data=signed.body
    )
    return response.status_code, response.json()


def sign(method, path, body):
    url = urlparse(BASE)
    request = SdkRequest(
        method=method,
        schema=url.scheme,
        host=url.netloc,
        resource_path=path,
        query_params=[],
        header_params={"Content-Type": "application/json"},
        body=json.dumps(body),
    )
    return BasicCredentials(AK, SK).sign_request(request)


def expect(what, status, answer, wanted):
    print(f"{what}: {status}")
    if status != wanted:
        print(f"  expected {wanted}, got {status}: {answer}")
        sys.exit(1)


releases = f"/v2/meshes/{MESH}/namespaces/default/releases"
name = "sdk-" + uuid.uuid4().hex[:8]
release = {
    "kind": "Release",
    "apiVersion": "asm/v2",
    "metadata": {"name": name, "namespace": "default"},
    "spec": {
        "serviceName": name,
        "clusterID": "cluster-a",
        "deploymentName": name + "-v1",
        "version": "v2",
        "type": "canary",
        "grayDeployments": [{
            "clusterID": "cluster-b",
            "template": {"spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": name, "image": "registry.example/app:2"}]},
                },
            }},
        }],
    },
}

status, created = call("POST", releases, body=release)
expect("create", status, created, 200)
status, got = call("GET", f"{releases}/{name}")
expect("get", status, got, 200)
assert got == created, (got, created)
status, page = call("GET", releases, query={"limit": 5, "serviceName": name})
expect("list with a query", status, page, 200)
assert [r["metadata"]["name"] for r in page["items"]] == [name], page
status, ended = call("DELETE", f"{releases}/{name}", query={"action": "cancel"})
expect("delete ?action=cancel", status, ended, 200)
status, answer = call("GET", f"{releases}/{name}", extra_headers={"X-Sdk-Nonce": uuid.uuid4().hex})
expect("get with a nonce", status, answer, 200)
# A signed write is carried out once: the same signed bytes again (a
# captured request replayed) are refused; signed anew, it is a new request.
replayed = dict(release, metadata={"name": name + "-r", "namespace": "default"})
once = sign("POST", releases, replayed)
status, answer = send("POST", once)
expect("a signed create", status, answer, 200)
status, answer = send("POST", once)
expect("the same signed create replayed", status, answer, 401)
assert "replay" in answer["errorMsg"], answer
status, answer = call("GET", releases, sk="not-the-secret-key-at-all")
expect("a wrong secret key", status, answer, 401)
assert answer["errorCode"] == "ASM.01000001", answer
print("the SDK's signatures are accepted")
