"""A daily GPU utilisation profile from the Alibaba trace (cluster-trace-gpu-v2023).

Demand on a day is every pod's GPUs (``num_gpu × gpu_milli / 1000``) times the
seconds of that day it lived (``[creation_time, deletion_time)``); supply is
the node list's GPUs times 86,400 s. Their ratio, clamped to [0, 1], is the
day's utilisation. The trace covers about 150 days; ``bench.credit`` loops it.
"""

import csv
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "alibaba-gpu-v2023"
NODE_LIST = DATA / "openb_node_list_gpu_node.csv"
POD_LIST = DATA / "openb_pod_list_default.csv"
DAY = 86_400


def daily_utilisation(pods: Path = POD_LIST, nodes: Path = NODE_LIST) -> list[float]:
    with open(nodes, newline="") as handle:
        capacity = sum(int(row["gpu"]) for row in csv.DictReader(handle))
    demand: list[float] = []
    with open(pods, newline="") as handle:
        for row in csv.DictReader(handle):
            gpus = int(row["num_gpu"]) * int(row["gpu_milli"]) / 1000
            if gpus <= 0 or not row.get("deletion_time"):
                continue
            start, end = int(row["creation_time"]), int(row["deletion_time"])
            if end <= start:
                continue
            last = (end - 1) // DAY
            while len(demand) <= last:
                demand.append(0.0)
            for day in range(start // DAY, last + 1):
                lo, hi = max(start, day * DAY), min(end, (day + 1) * DAY)
                demand[day] += gpus * (hi - lo)
    return [min(max(d / (capacity * DAY), 0.0), 1.0) for d in demand]


if __name__ == "__main__":
    profile = daily_utilisation()
    print(
        len(profile),
        round(sum(profile) / len(profile), 3),
        [round(u, 2) for u in profile[:: max(1, len(profile) // 20)]],
    )
