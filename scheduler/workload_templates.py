"""Workload templates: what a renter starts from, each with defaults the renter can change.

* ``pytorch`` — a PyTorch training run (a batch Job);
* ``jupyter`` — JupyterLab, an interactive session reached through the platform's proxy
  (``/proxy/<job>/8888/``) and, optionally, SSH;
* ``vllm`` — an OpenAI-compatible vLLM server, an inference endpoint (a Deployment behind a
  Service, ready when ``/health`` answers).

``{base_url}`` in a command or argument is replaced, at launch, by the path the platform serves
the port under (Jupyter must know it to build its links)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    BATCH = "batch"  # a Job that runs to its end
    INTERACTIVE = "interactive"  # a Job with exposed ports (HTTP through the platform, SSH)
    INFERENCE = "inference"  # an Endpoint: Deployment + Service + readiness probe


@dataclass(frozen=True)
class Template:
    key: str
    title: str
    kind: Kind
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    http_ports: tuple[tuple[int, str], ...] = ()  # (port, label)
    ssh: bool = False
    port: int = 0  # an inference server's port
    readiness_path: str = ""
    description: str = ""


TEMPLATES: dict[str, Template] = {
    t.key: t
    for t in (
        Template(
            key="pytorch",
            title="PyTorch training",
            kind=Kind.BATCH,
            image="nvcr.io/nvidia/pytorch:24.05-py3",
            command=("torchrun",),
            args=("--standalone", "--nproc-per-node=gpu", "train.py"),
            env={"NCCL_DEBUG": "WARN"},
            description="A training run with torchrun on every GPU of the job; it ends when the script exits.",
        ),
        Template(
            key="jupyter",
            title="Jupyter",
            kind=Kind.INTERACTIVE,
            image="quay.io/jupyter/pytorch-notebook:cuda12-latest",
            command=("start-notebook.py",),
            args=(
                "--ServerApp.base_url={base_url}",
                "--ServerApp.ip=0.0.0.0",
                "--ServerApp.token=",
                "--ServerApp.allow_remote_access=True",
            ),
            http_ports=((8888, "JupyterLab"),),
            ssh=True,
            description="JupyterLab in the browser through InfraFi (only you can open it), and SSH with your keys.",
        ),
        Template(
            key="vllm",
            title="vLLM (OpenAI-compatible server)",
            kind=Kind.INFERENCE,
            image="vllm/vllm-openai:v0.6.3",
            args=("--model", "meta-llama/Llama-3.1-8B-Instruct", "--port", "8000"),
            env={"HF_HOME": "/workspace/hf"},
            port=8000,
            readiness_path="/health",
            description="An OpenAI-compatible API (/v1/chat/completions, streamed) called with your API token.",
        ),
    )
}
