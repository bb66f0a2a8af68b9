"""Write deploy/k8s/nginx.conf from deploy/nginx.conf: the same proxy, upstream on the pod's loopback.

    python scripts/k8s_nginx_conf.py          # rewrite the file
    python scripts/k8s_nginx_conf.py --check  # exit 1 when it is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
HEADER = ("# Nginx in front of the lawclf API (docker-compose.yml mounts this as /etc/nginx/nginx.conf).",
          "# Nginx in front of the lawclf API inside each Kubernetes pod (a sidecar: deployment.yaml).\n"
          "# GENERATED from deploy/nginx.conf with the upstream on the pod's loopback; do not edit by hand:\n"
          "#   python scripts/k8s_nginx_conf.py   (tests/integration/test_k8s_manifests.py checks the two agree)")
UPSTREAM = ("        server app:8000;   # the app service in docker-compose.yml (Gunicorn's bind)",
            "        server 127.0.0.1:8000;   # Gunicorn in the same pod, bound to loopback only")


def k8s_conf(source: str) -> str:
    for old, new in (HEADER, UPSTREAM):
        if old not in source:
            raise SystemExit(f"deploy/nginx.conf no longer holds the line {old!r}: update {__file__}")
        source = source.replace(old, new)
    return source


def main(argv: list[str]) -> int:
    want = k8s_conf((DEPLOY / "nginx.conf").read_text(encoding="utf-8"))
    target = DEPLOY / "k8s" / "nginx.conf"
    if "--check" in argv:
        return 0 if target.read_text(encoding="utf-8") == want else 1
    target.write_text(want, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
