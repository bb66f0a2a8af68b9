"""Every figure the stages draw, in one place: data (01), keywords (02), training (03), evaluation (04).

Each function takes plain values (counts, scores, a history, a table), writes one PNG and returns its
path; matplotlib is imported inside each, so a stage that draws nothing never loads it. Chinese labels
need a CJK font (:mod:`lawclf.fonts`); without one the figures fall back to English labels rather than
draw empty boxes, except the keyword bars, whose words are Chinese (the keyword stage checks the font
before any work). The word clouds are the keyword stage's own (``keywords.render_wordcloud``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from lawclf.config import LABEL_NAMES_ZH, LABELS
from lawclf.fonts import chinese_labels, setup_matplotlib
from lawclf.metrics import binary_metrics

if TYPE_CHECKING:
    import pandas as pd

def plot_summary(splits: Mapping[str, Sequence[Any]], out_dir: Path) -> dict[str, str]:
    """Class balance per split and text-length histogram per class, as PNGs (``splits``: split name →
    rows with ``.text`` and ``.label``, as ``data.stratified_split`` returns them). Returns their paths."""
    # No matplotlib.use(): figures are only saved and closed, which works on any backend,
    # and switching backends would break inline plots in the notebook that called us.
    import matplotlib.pyplot as plt

    try:  # Chinese labels need a CJK font; fall back to English rather than draw empty boxes
        setup_matplotlib()
        names, t = LABEL_NAMES_ZH, {"balance": "各划分的类别数量", "count": "条数", "length": "文本长度分布（字符）",
                                    "chars": "字符数"}
    except Exception:  # noqa: BLE001 - FontNotFoundError or no fonts module: English is fine
        names, t = LABELS, {"balance": "Class balance per split", "count": "rows",
                            "length": "Text length per class (characters)", "chars": "characters"}

    def finish(fig, ax, name: str, title: str) -> str:
        ax.set_ylabel(t["count"])
        ax.set_title(title)
        ax.legend()
        fig.tight_layout()
        path = str(out_dir / f"{name}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    paths = {}
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.38
    for label in (0, 1):
        counts = [sum(r.label == label for r in splits[s]) for s in splits]
        xs = [i + (label - 0.5) * width for i in range(len(splits))]
        bars = ax.bar(xs, counts, width, label=names[label])
        ax.bar_label(bars, fontsize=8)
    ax.set_xticks(range(len(splits)), list(splits))
    ax.margins(y=0.12)  # room for the count labels above the bars
    paths["class_balance"] = finish(fig, ax, "class_balance", t["balance"])

    fig, ax = plt.subplots(figsize=(6, 3.5))
    all_rows = [r for s in splits for r in splits[s]]
    top = max((len(r.text) for r in all_rows), default=1)
    bins = range(0, top + 10, max(1, top // 40))
    for label in (0, 1):
        ax.hist([len(r.text) for r in all_rows if r.label == label], bins=bins, alpha=0.6, label=names[label])
    ax.set_xlabel(t["chars"])
    paths["length_distribution"] = finish(fig, ax, "length_distribution", t["length"])
    return paths


def plot_bias_bars(table: "pd.DataFrame", out_path: str | os.PathLike[str], *, top_k: int = 20,
                   font_path: str = "") -> Path:
    """Two bar charts side by side: the ``top_k`` most legal-leaning and most non-legal-leaning words (z)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    with matplotlib.rc_context():
        setup_matplotlib(font_path)
        legal = table[table["z"] > 0].nlargest(top_k, "z")
        non_legal = table[table["z"] < 0].nsmallest(top_k, "z")
        height = max(3.0, 0.3 * max(len(legal), len(non_legal), 1) + 1.2)
        fig, axes = plt.subplots(1, 2, figsize=(11, height))
        for ax, part, colour, title in (
                (axes[0], legal, "#c0392b", f"偏向「{LABEL_NAMES_ZH[1]}」的词"),
                (axes[1], non_legal, "#2471a3", f"偏向「{LABEL_NAMES_ZH[0]}」的词")):
            part = part.iloc[::-1]  # largest bar on top
            ax.barh(part["word"], part["z"].abs(), color=colour)
            ax.set_title(title)
            ax.set_xlabel("|z|（对数几率比的 z 分数，越大越偏向该类）")
            ax.tick_params(axis="y", labelsize=10)
        fig.tight_layout()
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
        plt.close(fig)
    return out


def plot_token_lengths(lengths: Sequence[int], max_len: int, out: Path) -> Path:
    """Histogram of token lengths with the MAX_LEN line."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    zh = chinese_labels()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.hist(lengths, bins=50, color="#4C72B0")
    ax.axvline(max_len, color="red", linestyle="--", label=f"MAX_LEN = {max_len}")
    ax.set_xlabel("每条文本的 token 数（含 [CLS] 和 [SEP]）" if zh else "tokens per text (with [CLS] and [SEP])")
    ax.set_ylabel("条数" if zh else "texts"), ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_history(history: list[dict], out: Path) -> Path:
    """Loss curves (train vs validation) and validation F1 / PR-AUC per epoch."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    zh = chinese_labels()
    t = ({"train": "训练集损失", "val": "验证集损失", "epoch": "第几轮", "loss": "损失",
          "val_f1": "验证集 F1", "val_pr_auc": "验证集 PR-AUC", "val_accuracy": "验证集准确率"} if zh else
         {"train": "train loss", "val": "validation loss", "epoch": "epoch", "loss": "loss",
          "val_f1": "validation f1", "val_pr_auc": "validation pr_auc", "val_accuracy": "validation accuracy"})
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label=t["train"])
    ax1.plot(epochs, [h["val_loss"] for h in history], "s-", label=t["val"])
    ax1.set_xlabel(t["epoch"]), ax1.set_ylabel(t["loss"]), ax1.legend(), ax1.grid(alpha=0.3)
    for key in ("val_f1", "val_pr_auc", "val_accuracy"):
        if key in history[0]:
            ax2.plot(epochs, [h[key] for h in history], "o-", label=t[key])
    ax2.set_xlabel(t["epoch"]), ax2.set_ylim(0, 1.02), ax2.legend(), ax2.grid(alpha=0.3)
    for ax in (ax1, ax2):
        ax.set_xticks(epochs)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_confusion(m: Mapping[str, Any], out: Path, chinese: bool) -> Path:
    import matplotlib.pyplot as plt

    names = list(LABEL_NAMES_ZH) if chinese else list(LABELS)
    cm = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black", fontsize=13)
    ax.set_xticks([0, 1], names), ax.set_yticks([0, 1], names)
    ax.set_xlabel("预测" if chinese else "predicted"), ax.set_ylabel("真实" if chinese else "true")
    ax.set_title(f"阈值 {m['threshold']:.3f}" if chinese else f"threshold {m['threshold']:.3f}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_pr_curve(labels, scores, threshold: float, out: Path, chinese: bool) -> Path:
    import matplotlib.pyplot as plt
    from sklearn.metrics import average_precision_score, precision_recall_curve

    p, r, _ = precision_recall_curve(labels, scores)
    m = binary_metrics(labels, scores, threshold)
    fig, ax = plt.subplots(figsize=(4.8, 4))
    ax.plot(r, p, label=f"PR-AUC {average_precision_score(labels, scores):.3f}")
    ax.scatter([m["recall"]], [m["precision"]], color="red", zorder=3,
               label=f"阈值 {threshold:.3f}" if chinese else f"threshold {threshold:.3f}")
    ax.set_xlabel("召回率 recall" if chinese else "recall"), ax.set_ylabel("精确率 precision" if chinese else "precision")
    ax.set_xlim(0, 1.02), ax.set_ylim(0, 1.02), ax.grid(alpha=0.3), ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_reliability(cal: Mapping[str, Any], out: Path, chinese: bool) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="完美校准" if chinese else "perfect")
    xs = [b["mean_score"] for b in cal["bins"]]
    ys = [b["fraction_legal"] for b in cal["bins"]]
    ax.plot(xs, ys, "o-", label=f"模型（ECE {cal['ece']:.3f}）" if chinese else f"model (ECE {cal['ece']:.3f})")
    for b in cal["bins"]:
        ax.annotate(str(b["n"]), (b["mean_score"], b["fraction_legal"]), fontsize=7, xytext=(3, -9),
                    textcoords="offset points")
    ax.set_xlabel("预测的 P(法律)" if chinese else "predicted P(legal)")
    ax.set_ylabel("实际法律占比" if chinese else "observed fraction legal")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1.02), ax.grid(alpha=0.3), ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_score_hist(labels, scores, threshold: float, out: Path, chinese: bool) -> Path:
    import matplotlib.pyplot as plt

    y, s = np.asarray(labels), np.asarray(scores)
    names = LABEL_NAMES_ZH if chinese else LABELS
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    bins = np.linspace(0, 1, 26).tolist()
    for cls in (0, 1):
        ax.hist(s[y == cls], bins=bins, alpha=0.6, label=names[cls])
    ax.axvline(threshold, color="red", linestyle="--", label=f"阈值 {threshold:.3f}" if chinese else f"threshold {threshold:.3f}")
    ax.set_xlabel("P(法律)" if chinese else "P(legal)"), ax.set_ylabel("条数" if chinese else "count")
    ax.set_yscale("log"), ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


__all__ = ["plot_summary", "plot_bias_bars", "plot_token_lengths", "plot_history", "plot_confusion", "plot_pr_curve",
           "plot_reliability", "plot_score_hist"]
