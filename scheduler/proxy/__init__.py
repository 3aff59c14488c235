"""The platform's proxy to renters' pods (issue 15): ``/proxy/<job>/<port>/`` for interactive
sessions and ``/endpoints/<endpoint>/`` for inference endpoints, forwarded through the owner's
Kubernetes API server's service proxy."""
