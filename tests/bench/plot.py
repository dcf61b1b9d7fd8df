#!/usr/bin/env python3
"""Plots p50/p99 latency by concurrency for each path from the bench's JSON results.

usage: python3 tests/bench/plot.py docs/bench-results.json docs/bench-latency.png
(needs matplotlib: python3 -m pip install matplotlib)
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {
    "direct": "tab:green",
    "socat": "tab:red",
    "socat-tuned": "tab:orange",
    "bridge": "tab:blue",
    "bridge-handoff": "tab:purple",
}


def main(src, dst):
    res = json.load(open(src))
    cells = [c for c in res["requests"] if c["path"] in COLORS]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, mode in zip(axes, ["keep-alive", "new-conn"]):
        for path, color in COLORS.items():
            pts = sorted((c["concurrency"], c["p50_us"], c["p99_us"]) for c in cells
                         if c["mode"] == mode and c["path"] == path)
            if not pts:
                continue
            xs = [p[0] for p in pts]
            ax.plot(xs, [p[1] for p in pts], "o-", color=color, label=f"{path} p50")
            ax.plot(xs, [p[2] for p in pts], "s--", color=color, alpha=0.6, label=f"{path} p99")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([1, 8, 64])
        ax.set_xticklabels(["1", "8", "64"])
        ax.set_xlabel("concurrent clients")
        ax.set_title("keep-alive" if mode == "keep-alive" else "new connection per request")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency per request (µs, log)")
    axes[1].legend(fontsize=8, loc="upper left")
    m = res["machine"]
    fig.suptitle(f"POST /api/chat (stream:false), double answering at once — {m['cpus']} CPUs, {m['date'][:10]}")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
