"""The placement benchmark's own parts: the trace loader, the saturation upper bound, the collateral lower
bound, and a CI-sized run end to end (its last line is the JSON the goals are read from)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from bench import placement as bench
from scheduler.placement import Node, Request

REPO = Path(__file__).resolve().parent.parent
GOALS = {
    "saturation_ok",
    "cold_start_ok",
    "churn_ok",
    "churn_gpuspec33_ok",
    "collateral_ok",
    "collateral_acceptance_ok",
    "speed_ok",
    "production_p99_ok",
}


def task(gpus: int, models: str = "", cpu: int = 0, memory: int = 0) -> bench.Task:
    spec = frozenset(models.split("|")) if models else None
    return bench.Task(Request(gpu_count=gpus, models=spec), gpus, cpu, memory)


def test_the_loader_reads_cpu_and_memory_and_keeps_cpu_only_pods(tmp_path):
    # Given a node list and a pod list without time columns, with one CPU-only pod
    nodes_csv = tmp_path / "nodes.csv"
    nodes_csv.write_text("sn,cpu_milli,memory_mib,gpu,model\nn0,96000,786432,8,G2\nn1,64000,262144,2,T4\n")
    pods_csv = tmp_path / "pods.csv"
    pods_csv.write_text(
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n"
        "p0,12000,16384,1,500,T4|G2\n"
        "p1,4000,8192,0,0,\n"
        "p2,32000,65536,8,1000,\n"
    )

    # When both are loaded
    nodes = bench.load_nodes(nodes_csv)
    tasks = bench.load_tasks(pods_csv)

    # Then the nodes carry their CPU and memory, and every pod is a task with its own request
    assert [(n.model, n.gpus, n.cpu_milli, n.memory_mib) for n in nodes] == [
        ("G2", 8, 96000, 786432),
        ("T4", 2, 64000, 262144),
    ]
    assert [(t.gpus, t.cpu_milli, t.memory_mib) for t in tasks] == [
        (1, 12000, 16384),
        (0, 4000, 8192),
        (8, 32000, 65536),
    ]
    assert tasks[0].request == Request(gpu_count=1, models=frozenset({"T4", "G2"}), cpu_milli=12000, memory_mib=16384)
    assert tasks[1].request == Request(gpu_count=0, cpu_milli=4000, memory_mib=8192)  # CPU-only, any model
    assert tasks[2].request.models is None


def test_the_upper_bound_on_two_models_and_three_nodes():
    # Given an A node with 2 GPUs, an A node with 8 and a B node with 4
    nodes = [
        Node(server_id=0, model="A", gpus=2),
        Node(server_id=1, model="A", gpus=8),
        Node(server_id=2, model="B", gpus=4),
    ]
    # and two 8-GPU tasks of any model (16 GPUs), six 1-GPU and one 4-GPU B-only tasks (10), one 1-GPU A-only task
    tasks = [task(8), task(8), *[task(1, "B")] * 6, task(4, "B"), task(1, "A")]

    # When the bound is computed
    bound = bench.upper_bound(nodes, tasks)

    # Then it is 13: only the 8-GPU node takes an 8-GPU task (8 of 16), only the B node takes B-only
    # tasks (4 of 10), and the A-only GPU fits the 2-GPU node; supply (14) is not the limit.
    assert bound == 8 + 4 + 1


def test_the_first_refusal_bound_is_the_longest_routable_prefix():
    # Given the same three nodes, and an 8-GPU task, four B-only GPUs, a fifth B-only GPU, then an A-only one
    nodes = [
        Node(server_id=0, model="A", gpus=2),
        Node(server_id=1, model="A", gpus=8),
        Node(server_id=2, model="B", gpus=4),
    ]
    tasks = [task(8), *[task(1, "B")] * 4, task(1, "B"), task(1, "A")]

    # Then every policy refuses the fifth B-only task at the latest, with 8 + 4 GPUs allocated
    assert bench.first_refusal_bound(nodes, tasks) == 12
    assert bench.first_refusal_bound(nodes, tasks[:5]) == 12
    assert bench.first_refusal_bound(nodes, [task(8), task(8)]) == 8


def test_the_upper_bound_never_counts_a_task_on_a_node_too_small():
    nodes = [Node(server_id=0, model="A", gpus=4), Node(server_id=1, model="A", gpus=4)]

    assert bench.upper_bound(nodes, [task(8), task(8)]) == 0
    assert bench.upper_bound(nodes, [task(4), task(8), task(1)]) == 5
    # nor on a node with too little CPU or memory for it, even empty
    small = [Node(server_id=0, model="A", gpus=8, cpu_milli=96_000, memory_mib=786_432)]
    assert bench.upper_bound(small, [task(8, cpu=120_000), task(1, cpu=96_000)]) == 1
    assert bench.upper_bound(small, [task(2, memory=800_000)]) == 0


def test_the_collateral_lower_bound_on_a_tiny_loan_book():
    # Needs 1, 2, 4, 4 (the largest is 4): tasks of 1, 1 and 8 GPUs add at most 1 + 1 + 4 = 6 towards
    # loans, enough for the two smallest needs (1 + 2) but not a third (+ 4 = 7): two stay below.
    assert bench.collateral_lower_bound([4, 1, 4, 2], [task(1), task(1), task(8)]) == 2
    # One 4-GPU task covers one loan at most, though 4 GPUs would cover the needs 1 and 1.
    assert bench.collateral_lower_bound([1, 1, 4], [task(4)]) == 2
    # CPU-only tasks cover nothing; no tasks, no loan covered.
    assert bench.collateral_lower_bound([1, 2], [bench.Task(Request(gpu_count=1), 0, 1000, 0)]) == 2
    assert bench.collateral_lower_bound([1, 2], []) == 2
    # Enough GPUs: every loan can be covered.
    assert bench.collateral_lower_bound([1, 2], [task(1), task(2), task(8)]) == 0


def test_the_quick_run_ends_with_json_holding_every_goal():
    # Given no database, so that the production path is skipped (and its goal False, never silently True)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}

    # When the CI-sized benchmark runs
    done = subprocess.run(
        [sys.executable, "-m", "bench.placement", "--quick"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )

    # Then the last line is the result, with one boolean per goal
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result["goals"]) == GOALS
    assert all(isinstance(v, bool) for v in result["goals"].values())
    assert result["quick"] is True
    assert result["production"]["skipped"]
    assert result["goals"]["production_p99_ok"] is False
    assert set(result["saturation"]) == {"openb_pod_list_default.csv", "openb_pod_list_gpuspec33.csv"}
    for s in result["saturation"].values():
        bound = s["upper_bound_gpu_acceptance"]["worst"]
        assert all(r["gpu_acceptance"]["worst"] <= bound + 1e-9 for r in s["policies"].values())
    for point in result["collateral"]:
        assert all(point[p]["below"] >= point["lower_bound"] for p in ("first_fit", "ours_needs") if p in point)
