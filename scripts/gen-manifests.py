#!/usr/bin/env python3
"""Writes synthetic cluster manifests for load tests.

    python3 scripts/gen-manifests.py [--format FORMAT] OUT [SERVICES]

SERVICES (default 10000) Services `svc<N>` in namespaces `ns<N % 50>`, each
with one EndpointSlice of 10 ready endpoints spread over nodes
node-0..node-19. FORMAT:

* `dir` (the default): OUT is a directory of ClusterIP Services written 100
  Services to a file (`part000.yaml`, ...), for `kproxy run --source dir:`;
* `json-list`: OUT is one file, a `kind: List` in JSON (on one line;
  names, labels, specs and endpoints only: about 21 MB at 10k) of a mixed
  cluster: every third Service a NodePort, every tenth a LoadBalancer (every
  other one with source ranges and eTP Local), every fifth with a UDP port
  too, every seventh with ClientIP affinity;
* `kubectl-yaml`: the same cluster as `kubectl get svc,endpointslices -A -o
  yaml --show-managed-fields` prints it (the List, `managedFields`, the
  annotation as a literal block scalar).
"""
import json
import os
import re
import sys

TIME = "2024-05-29T07:42:43Z"


def simple_dir(out, services):
    os.makedirs(out, exist_ok=True)
    for f in range((services + 99) // 100):
        docs = []
        for i in range(f * 100, min(services, f * 100 + 100)):
            ns = f"ns{i % 50}"
            cip = f"172.16.{(i + 1) // 256}.{(i + 1) % 256}"
            docs.append(
                f"apiVersion: v1\nkind: Service\nmetadata: {{name: svc{i}, namespace: {ns}}}\n"
                f"spec:\n  clusterIP: {cip}\n  clusterIPs: [{cip}]\n"
                f"  ports: [{{name: http, port: 80, protocol: TCP, targetPort: 8080}}]\n"
            )
            eps = ",".join(
                f"{{addresses: [10.{(i * 10 + k) // 65536}.{((i * 10 + k) // 256) % 256}.{(i * 10 + k) % 256}], "
                f"conditions: {{ready: true}}, nodeName: node-{k % 20}}}"
                for k in range(10)
            )
            docs.append(
                f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
                f"metadata: {{name: svc{i}-abc, namespace: {ns}, labels: {{kubernetes.io/service-name: svc{i}}}}}\n"
                f"addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\n"
                f"endpoints: [{eps}]\n"
            )
        with open(os.path.join(out, f"part{f:03}.yaml"), "w") as fh:
            fh.write("---\n".join(docs))


def uid(kind, i):
    return f"{kind:08x}-{i // 65536:04x}-4{i % 4096:03x}-8000-{i:012x}"


def ip(base, n):
    return f"{base[0]}.{base[1] + n // 65536}.{(n // 256) % 256}.{n % 256}"


def managed(fields):
    """A managedFields entry as the API server records it."""
    return {
        "apiVersion": "v1",
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
        "manager": "kubectl-client-side-apply",
        "operation": "Update",
        "time": TIME,
    }


def cluster(services, kubectl):
    """The mixed cluster's List; `kubectl` adds the metadata kubectl prints."""
    items = []
    for i in range(services):
        ns, name = f"ns{i % 50}", f"svc{i}"
        cip = ip((172, 16), i + 1)
        ports = [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]
        if i % 5 == 0:
            ports.append({"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 8053})
        kind = "ClusterIP"
        if i % 3 == 0:
            kind = "NodePort"
            for k, p in enumerate(ports):
                p["nodePort"] = 30000 + (i * 2 + k) % 2768
        if i % 10 == 0:
            kind = "LoadBalancer"
            for k, p in enumerate(ports):
                p["nodePort"] = 30000 + (i * 2 + k) % 2768
        spec = {
            "clusterIP": cip,
            "clusterIPs": [cip],
            "internalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "ports": ports,
            "selector": {"app": name},
            "sessionAffinity": "None",
            "type": kind,
        }
        if i % 7 == 0:
            spec["sessionAffinity"] = "ClientIP"
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 10800}}
        status = {"loadBalancer": {}}
        if kind != "ClusterIP":
            spec["externalTrafficPolicy"] = "Cluster"
        if kind == "LoadBalancer":
            spec["allocateLoadBalancerNodePorts"] = True
            status = {"loadBalancer": {"ingress": [{"ip": ip((203, 0), i), "ipMode": "VIP"}]}}
            if i % 20 == 0:
                spec["loadBalancerSourceRanges"] = ["198.51.100.0/24"]
                spec["externalTrafficPolicy"] = "Local"
                spec["healthCheckNodePort"] = 32000 + i % 700
        applied = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"annotations": {}, "name": name, "namespace": ns},
            "spec": {"ports": ports, "selector": {"app": name}, "type": kind},
        }
        meta = {"labels": {"app": name}, "name": name, "namespace": ns}
        full_meta = {
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": json.dumps(
                    applied, separators=(",", ":")
                )
                + "\n"
            },
            "creationTimestamp": TIME,
            "labels": {"app": name},
            "name": name,
            "namespace": ns,
            "resourceVersion": str(1000 + i),
            "uid": uid(1, i),
        }
        if kubectl:
            meta = full_meta
            port_fields = {
                f'k:{{"port":{p["port"]},"protocol":"{p["protocol"]}"}}': {
                    ".": {},
                    "f:name": {},
                    "f:port": {},
                    "f:protocol": {},
                    "f:targetPort": {},
                }
                for p in ports
            }
            meta["managedFields"] = [
                managed(
                    {
                        "f:metadata": {
                            "f:annotations": {
                                ".": {},
                                "f:kubectl.kubernetes.io/last-applied-configuration": {},
                            }
                        },
                        "f:spec": {
                            "f:internalTrafficPolicy": {},
                            "f:ports": {".": {}, **port_fields},
                            "f:selector": {},
                            "f:sessionAffinity": {},
                            "f:type": {},
                        },
                    }
                )
            ]
        items.append(
            {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec, "status": status}
        )
        endpoints = []
        for k in range(10):
            n = i * 10 + k
            ep = {
                "addresses": [ip((10, 0), n)],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": f"node-{n % 20}",
            }
            if kubectl:
                ep["targetRef"] = {
                    "kind": "Pod",
                    "name": f"{name}-7c5ddbdf54-{k:05d}",
                    "namespace": ns,
                    "uid": uid(3, n),
                }
            endpoints.append(ep)
        labels = {
            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            "kubernetes.io/service-name": name,
        }
        smeta = {"labels": labels, "name": f"{name}-abcde", "namespace": ns}
        full_smeta = {
            "creationTimestamp": TIME,
            "generateName": f"{name}-",
            "generation": 1,
            "labels": labels,
            "name": f"{name}-abcde",
            "namespace": ns,
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "blockOwnerDeletion": True,
                    "controller": True,
                    "kind": "Service",
                    "name": name,
                    "uid": uid(1, i),
                }
            ],
            "resourceVersion": str(50000 + i),
            "uid": uid(2, i),
        }
        if kubectl:
            smeta = full_smeta
            smeta["managedFields"] = [
                dict(
                    managed(
                        {
                            "f:addressType": {},
                            "f:endpoints": {},
                            "f:metadata": {
                                "f:generateName": {},
                                "f:labels": {".": {}, "f:kubernetes.io/service-name": {}},
                                "f:ownerReferences": {".": {}, f'k:{{"uid":"{uid(1, i)}"}}': {}},
                            },
                            "f:ports": {},
                        }
                    ),
                    apiVersion="discovery.k8s.io/v1",
                    manager="kube-controller-manager",
                )
            ]
        items.append(
            {
                "addressType": "IPv4",
                "apiVersion": "discovery.k8s.io/v1",
                "endpoints": endpoints,
                "kind": "EndpointSlice",
                "metadata": smeta,
                "ports": [
                    {"name": p["name"], "port": p["targetPort"], "protocol": p["protocol"]}
                    for p in ports
                ],
            }
        )
    return {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}}


PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")
WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def scalar(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, int):
        return str(v)
    if (PLAIN.match(v) or re.match(r"^[0-9]+\.[0-9]+\.[0-9.]+(/[0-9]+)?$", v)) and v.lower() not in WORDS:
        return v
    return json.dumps(v)


def key(k):
    return k if re.match(r"^[A-Za-z.][^ #]*$", k) and k.lower() not in WORDS else json.dumps(k)


def yaml(v, indent, out):
    """Block YAML as kubectl prints it (sequences not indented in mappings)."""
    pad = " " * indent
    if isinstance(v, dict):
        for k, x in v.items():
            if isinstance(x, dict) and x:
                out.append(f"{pad}{key(k)}:\n")
                yaml(x, indent + 2, out)
            elif isinstance(x, list) and x:
                out.append(f"{pad}{key(k)}:\n")
                yaml(x, indent, out)
            elif isinstance(x, str) and "\n" in x:
                body = "".join(f"{pad}  {line}\n" for line in x.rstrip("\n").split("\n"))
                out.append(f"{pad}{key(k)}: |\n{body}")
            else:
                out.append(f"{pad}{key(k)}: {flow(x)}\n")
    else:
        for x in v:
            if isinstance(x, (dict, list)) and x:
                sub = []
                yaml(x, indent + 2, sub)
                first = sub[0]
                sub[0] = f"{pad}- {first[indent + 2:]}"
                out.extend(sub)
            else:
                out.append(f"{pad}- {flow(x)}\n")


def flow(x):
    if isinstance(x, dict):
        return "{}"
    if isinstance(x, list):
        return "[]"
    return scalar(x)


def main():
    args = sys.argv[1:]
    fmt = "dir"
    if len(args) >= 2 and args[0] == "--format":
        fmt = args[1]
        args = args[2:]
    if not args or fmt not in ("dir", "json-list", "kubectl-yaml"):
        sys.exit(__doc__)
    out = args[0]
    services = int(args[1]) if len(args) > 1 else 10000
    if fmt == "dir":
        simple_dir(out, services)
    elif fmt == "json-list":
        with open(out, "w") as fh:
            json.dump(cluster(services, False), fh)
            fh.write("\n")
    else:
        lines = []
        yaml(cluster(services, True), 0, lines)
        with open(out, "w") as fh:
            fh.write("".join(lines))


if __name__ == "__main__":
    main()
