#!/usr/bin/env python3
"""Writes a directory of manifests for load tests of `kproxy run --source dir:`.

    python3 scripts/gen-manifests.py DIR [SERVICES]

SERVICES (default 10000) ClusterIP Services `svc<N>` in namespaces
`ns<N % 50>`, each with one EndpointSlice of 10 ready endpoints spread over
nodes node-0..node-19, written 100 Services to a file (`part000.yaml`, ...).
"""
import os
import sys


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    services = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
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


if __name__ == "__main__":
    main()
