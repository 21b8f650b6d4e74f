"""report.html: what the pipeline measured, as one self-contained page (inline SVG, no scripts).

Per sequence feature, the exact length histogram with the `max_sequence_length` the config's
coverage rule picks marked on it; per vocabulary, the coverage curve (the share of tokens the
k most frequent values cover) with the vocabulary's size marked; once the planner has run,
the TPU capacity of its plan (bytes per table, activations, which slices hold the tables).
Pure Python.
"""

from __future__ import annotations

import html
import math
from typing import Any

from common import statistics
from common.config import Config
from common.formatting import human_bytes

WIDTH, HEIGHT, PAD = 640, 220, 40


def _number(value: float | None) -> str:
    """A figure of a numeric column: 4 significant digits, a large one whole (a timestamp's
    mean, min and max all read 1.7e+09 otherwise)."""
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if 1e6 <= abs(value) < 1e18 else f"{value:.4g}"


def _share(value: float | None, digits: int) -> str:
    """A share as a percentage; "n/a" where it is not defined (no tokens)."""
    return "n/a" if value is None else f"{value:.{digits}%}"


def _svg(body: list[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{html.escape(title)}">' + "".join(body) + "</svg>"
    )


def _axes(x_label: str, y_label: str) -> list[str]:
    bottom, right = HEIGHT - PAD, WIDTH - 10
    return [
        f'<line x1="{PAD}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#444"/>',
        f'<line x1="{PAD}" y1="10" x2="{PAD}" y2="{bottom}" stroke="#444"/>',
        f'<text x="{(PAD + right) / 2}" y="{HEIGHT - 8}" text-anchor="middle" '
        f'font-size="12">{html.escape(x_label)}</text>',
        f'<text x="12" y="{HEIGHT / 2}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 12 {HEIGHT / 2})">{html.escape(y_label)}</text>',
    ]


def length_histogram_svg(histogram: dict[str, int], chosen: int) -> str:
    """Bars of rows per length up to 1.5 x the 99th percentile (longer ones in a last bar)."""
    pairs = sorted((int(k), int(v)) for k, v in histogram.items() if v)
    if not pairs:
        return "<p>No sequences.</p>"
    cap = max(int(1.5 * max(statistics.coverage_length(histogram, 0.99), chosen)), 1)
    bins = [0] * (cap + 2)
    for length, count in pairs:
        bins[min(length, cap + 1)] += count
    tallest = max(bins)
    plot_w, plot_h = WIDTH - PAD - 10, HEIGHT - PAD - 10
    bar_w = plot_w / len(bins)
    body = _axes("sequence length (last bar: longer)", "rows")
    for i, count in enumerate(bins):
        if not count:
            continue
        h = plot_h * count / tallest
        body.append(
            f'<rect x="{PAD + i * bar_w:.1f}" y="{HEIGHT - PAD - h:.1f}" '
            f'width="{max(bar_w - 0.5, 0.5):.1f}" height="{h:.1f}" fill="#4c78a8">'
            f"<title>length {i if i <= cap else f'> {cap}'}: {count} rows</title></rect>"
        )
    x = PAD + (chosen + 0.5) * bar_w
    body.append(
        f'<line x1="{x:.1f}" y1="10" x2="{x:.1f}" y2="{HEIGHT - PAD}" stroke="#d62728" '
        'stroke-width="2" stroke-dasharray="4 3"/>'
        f'<text x="{x + 4:.1f}" y="22" fill="#d62728" font-size="12">'
        f"max_sequence_length = {chosen}</text>"
        f'<text x="{PAD}" y="{HEIGHT - PAD + 14}" font-size="11">0</text>'
        f'<text x="{WIDTH - 10}" y="{HEIGHT - PAD + 14}" font-size="11" '
        f'text-anchor="end">{cap}+</text>'
    )
    return _svg(body, "sequence length histogram")


def coverage_svg(coverage: dict[str, float], size: int) -> str:
    """Share of tokens covered by the top k values, k on a log scale."""
    points = sorted((int(k), float(v)) for k, v in coverage.items())
    if not points:
        return "<p>No tokens.</p>"
    top = max(points[-1][0], size, 2)
    plot_w, plot_h = WIDTH - PAD - 10, HEIGHT - PAD - 10

    def x_of(k: int) -> float:
        return PAD + plot_w * math.log(max(k, 1)) / math.log(top)

    def y_of(share: float) -> float:
        return HEIGHT - PAD - plot_h * share

    path = " ".join(f"{x_of(k):.1f},{y_of(v):.1f}" for k, v in points)
    body = _axes("top k values (log scale)", "share of tokens covered")
    body.append(
        f'<polyline points="{PAD},{y_of(0):.1f} {path}" fill="none" stroke="#4c78a8" '
        'stroke-width="2"/>'
    )
    for k, v in points:
        body.append(
            f'<circle cx="{x_of(k):.1f}" cy="{y_of(v):.1f}" r="2.5" fill="#4c78a8">'
            f"<title>top {k}: {v:.1%}</title></circle>"
        )
    if size:
        x = x_of(size)
        body.append(
            f'<line x1="{x:.1f}" y1="10" x2="{x:.1f}" y2="{HEIGHT - PAD}" stroke="#d62728" '
            'stroke-width="2" stroke-dasharray="4 3"/>'
            f'<text x="{x - 4:.1f}" y="{HEIGHT - PAD - 8}" fill="#d62728" font-size="12" '
            f'text-anchor="end">vocabulary: {size:,} values</text>'
        )
    body.append(
        f'<text x="{PAD - 4}" y="{y_of(1) + 4:.1f}" font-size="11" text-anchor="end">100%</text>'
    )
    body.append(
        f'<text x="{PAD}" y="{HEIGHT - PAD + 14}" font-size="11">1</text>'
        f'<text x="{WIDTH - 10}" y="{HEIGHT - PAD + 14}" font-size="11" '
        f'text-anchor="end">{top:,}</text>'
    )
    return _svg(body, "vocabulary coverage curve")


def chosen_length(config: Config, feature: str, histogram: dict[str, int]) -> int:
    """The max_sequence_length the planner picks by default: the config's value or coverage."""
    fixed = config.feature(feature).max_sequence_length
    if fixed is not None:
        return fixed
    return max(statistics.coverage_length(histogram, config.sequence.length_coverage), 1)


def capacity_section(capacity: dict[str, Any]) -> list[str]:
    """The TPU capacity of the plan (`embedding_plan.json` key `capacity`) as HTML tables."""
    slots = capacity["slots"]
    parts = [
        "<h2>TPU capacity (embedding plan)</h2>",
        f"<p>Optimizer {html.escape(capacity['optimizer'])}: {slots} slot table(s) a table; "
        f"float32 weights and slots; global batch {capacity['batch_size']:,}. Tables are "
        "sharded (div) over every TPU core; "
        f"{capacity['headroom']:.0%} of each core's HBM is kept for the dense model.</p>",
        "<table><tr><th>table</th><th>rows</th><th>dimension</th><th>weights</th>"
        "<th>slots</th><th>total</th></tr>",
    ]
    for name, t in capacity["tables"].items():
        parts.append(
            f"<tr><td>{html.escape(name)}</td><td>{t['rows']:,}</td><td>{t['dimension']}</td>"
            f"<td>{human_bytes(t['weight_bytes'])}</td><td>{human_bytes(t['slot_bytes'])}</td>"
            f"<td>{human_bytes(t['total_bytes'])}</td></tr>"
        )
    parts.append("</table>")
    sequences = {n: a for n, a in capacity["activations"].items() if a["type"] == "sequence"}
    if sequences:
        parts.append(
            "<table><tr><th>sequence feature</th><th>L</th><th>dimension</th>"
            "<th>activations a step (batch x L x dim x 4)</th>"
            "<th>pooled in the lookup (batch x dim x 4)</th></tr>"
        )
        for name, a in sequences.items():
            parts.append(
                f"<tr><td>{html.escape(name)}</td><td>{a['max_sequence_length']}</td>"
                f"<td>{a['dimension']}</td><td>{human_bytes(a['sequence_bytes'])}</td>"
                f"<td>{human_bytes(a['pooled_bytes'])}</td></tr>"
            )
        parts.append("</table>")
    parts.append(
        "<table><tr><th>slice</th><th>cores</th><th>HBM a core</th><th>tables a core</th>"
        "<th>activations a core</th><th>share of HBM</th><th>fits</th></tr>"
    )
    for s in capacity["slices"]:
        parts.append(
            f"<tr><td>{s['tpu_type']}</td><td>{s['cores']}</td>"
            f"<td>{s['hbm_per_core'] / 2**30:g} GiB</td>"
            f"<td>{human_bytes(s['table_bytes_per_core'])}</td><td>{human_bytes(s['activation_bytes_per_core'])}</td><td>{s['share']:.1%}</td>"
            f"<td>{'yes' if s['fits'] else 'no'}</td></tr>"
        )
    parts.append(f"</table><p>Smallest slice that fits: {capacity['smallest_fit'] or 'none'}.</p>")
    return parts


def render(
    stats: dict[str, Any],
    config: Config,
    title: str = "Pipeline report",
    capacity: dict[str, Any] | None = None,
    lengths: dict[str, int] | None = None,
) -> str:
    """The whole report page; with `capacity` (the plan's), its TPU capacity section too, and
    with `lengths` (the plan's max_sequence_length of each sequence, which `--length-coverage`
    may have changed) those lengths marked instead of the config's."""
    rows = stats["rows"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:60em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
        "padding:.25em .6em;text-align:right}th{background:#f3f3f3}"
        "td:first-child,th:first-child{text-align:left}h2{margin-top:1.6em}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Rows</h2><table><tr><th>read</th><th>train</th><th>validation</th><th>eval</th>"
        "<th>rejected</th></tr>",
        f"<tr><td>{rows['read']:,}</td><td>{rows['train']:,}</td>"
        f"<td>{rows.get('validation', 0):,}</td><td>{rows['eval']:,}</td>"
        f"<td>{rows['rejected']:,}</td></tr></table>",
    ]
    reasons = stats.get("rejected_reasons", {})
    if reasons:
        parts.append("<table><tr><th>rejection reason</th><th>rows</th></tr>")
        parts += [f"<tr><td>{html.escape(r)}</td><td>{n:,}</td></tr>" for r, n in reasons.items()]
        parts.append("</table><p>Every rejected row, with its reason, is in rejected/.</p>")

    parts.append("<h2>Sequence lengths (training split)</h2>")
    for name, summary in stats["sequences"].items():
        if not summary["count"]:  # no training row: no length is defined
            parts.append(f"<h3>{html.escape(name)}</h3><p>No sequences.</p>")
            continue
        chosen = (lengths or {}).get(name) or chosen_length(config, name, summary["histogram"])
        cost = statistics.truncation(summary["histogram"], chosen)
        q = summary["quantiles"]
        parts += [
            f"<h3>{html.escape(name)}</h3>",
            f"<p>{summary['count']:,} sequences, {summary['empty']:,} empty, mean "
            f"{summary['mean']:.1f}, longest {summary['max']:,}; median {q['0.5']}, 90% "
            f"{q['0.9']}, 95% {q['0.95']}, 99% {q['0.99']}.<br>At max_sequence_length "
            f"{chosen}: padding efficiency {cost['padding_efficiency']:.1%}, "
            f"{cost['truncated_fraction']:.1%} of sequences truncated, "
            f"{cost['dropped_id_fraction']:.1%} of ids dropped.</p>",
            length_histogram_svg(summary["histogram"], chosen),
        ]

    bags = stats.get("bags", {})
    if bags:
        parts.append("<h2>Bags (training split; pooled, every id kept up to the cap)</h2>")
    for name, summary in bags.items():
        if not summary["count"]:
            parts.append(f"<h3>{html.escape(name)}</h3><p>No bags.</p>")
            continue
        cap = statistics.bag_cap(summary["histogram"])
        cost = statistics.truncation(summary["histogram"], cap)
        parts += [
            f"<h3>{html.escape(name)}</h3>",
            f"<p>{summary['count']:,} bags, {summary['empty']:,} empty, mean "
            f"{summary['mean']:.1f} ids, longest {summary['max']:,}; cap {cap}: "
            f"{cost['dropped_id_fraction']:.2%} of ids dropped.</p>",
            length_histogram_svg(summary["histogram"], cap).replace(
                "max_sequence_length =", "cap ="
            ),
        ]

    skew = stats.get("eval_skew", {}).get("features", {})
    if any(f["tokens"] for f in skew.values()):
        parts.append(
            "<h2>Eval split against training</h2><table><tr><th>feature</th>"
            "<th>eval tokens</th><th>never seen in training</th>"
            "<th>out of vocabulary</th></tr>"
        )
        for name, f in skew.items():
            parts.append(
                f"<tr><td>{html.escape(name)}</td><td>{f['tokens']:,}</td>"
                f"<td>{_share(f['unseen_rate'], 1)}</td><td>{_share(f['oov_rate'], 1)}</td></tr>"
            )
        parts.append("</table>")

    parts.append("<h2>Vocabularies</h2>")
    for name, vocab in stats["vocabularies"].items():
        parts += [
            f"<h3>{html.escape(name)} <small>({html.escape(', '.join(vocab['features']))})"
            "</small></h3>",
            f"<p>{vocab['size']:,} values kept of {vocab['distinct_values']:,} distinct "
            f"(top_k {vocab['top_k']:,}, frequency_threshold {vocab['frequency_threshold']}), "
            f"{vocab['tokens']:,} tokens, {_share(vocab['oov_rate'], 2)} out of vocabulary.</p>",
            coverage_svg(vocab.get("coverage", {}), vocab["size"]),
        ]
    if stats.get("numeric"):
        parts.append(
            "<h2>Numeric features</h2><table><tr><th>feature</th><th>count</th>"
            "<th>mean</th><th>std</th><th>min</th><th>max</th></tr>"
        )
        for name, n in stats["numeric"].items():
            figures = "".join(f"<td>{_number(n[k])}</td>" for k in ("mean", "std", "min", "max"))
            parts.append(f"<tr><td>{html.escape(name)}</td><td>{n['count']:,}</td>{figures}</tr>")
        parts.append("</table>")
    if capacity:
        parts += capacity_section(capacity)
    parts.append(_files_section())
    parts.append("</body></html>")
    return "\n".join(parts)


def _files_section() -> str:
    """Links to the files beside the report that other tools read."""
    from pipeline.feature_statistics import SCHEMA, SPLITS, statistics_file

    links = [
        "<a href='stats.json'>stats.json</a> (every figure above)",
        *(
            f"<a href='{statistics_file(split)}'>{statistics_file(split)}</a> ({split} split, "
            "a DatasetFeatureStatisticsList: tfdv.load_stats_binary, Facets)"
            for split in SPLITS
        ),
        f"<a href='{SCHEMA}'>{SCHEMA}</a> (the raw schema: tfdv.load_schema_text)",
    ]
    return "<h2>Files</h2><ul>" + "".join(f"<li>{link}</li>" for link in links) + "</ul>"
