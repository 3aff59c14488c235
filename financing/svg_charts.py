"""Charts as inline SVG, drawn on the server: pages stay offline, no chart library.
Geometry is computed in Decimal like the amounts it draws.

Every label goes through ``escape``; numbers are formatted by us.
"""

from decimal import Decimal

from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

COLORS = {
    "platform_fee": "#64748b",
    "insurance": "#a855f7",
    "reserve": "#f59e0b",
    "interest": "#2563eb",
    "principal": "#0f766e",
    "owner": "#84cc16",
}
LABELS = {
    "platform_fee": "Platform fee",
    "insurance": "Insurance",
    "reserve": "Debt-service reserve",
    "interest": "Interest",
    "principal": "Principal (incl. sweep)",
    "owner": "Owner",
}


def _legend(keys) -> str:
    items = "".join(
        f'<span style="display:inline-flex;align-items:center;gap:.3rem;margin-right:.8rem">'
        f'<span style="width:.8rem;height:.8rem;background:{COLORS[k]};display:inline-block;border-radius:2px"></span>'
        f"{escape(LABELS[k])}</span>"
        for k in keys
    )
    return f'<div class="small">{items}</div>'


def stacked_bars(months: list[tuple[str, dict[str, Decimal]]], keys=tuple(COLORS)) -> SafeString:
    """One bar per month, stacked by waterfall line."""
    if not months:
        return mark_safe('<p class="muted">No revenue settled yet.</p>')
    width, height, pad, gap = 720, 220, 40, 8
    top = max(sum(m[k] for k in keys) for _, m in months) or Decimal(1)
    bar = Decimal(width - pad - gap * len(months)) / len(months)
    parts = []
    for i, (label, month) in enumerate(months):
        x = pad + i * (bar + gap)
        y = Decimal(height - 20)
        for key in keys:
            h = month[key] / top * (height - 40)
            if h > 0:
                y -= h
                parts.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{COLORS[key]}">'
                    f"<title>{escape(label)} {escape(LABELS[key])}: ${month[key]:,.2f}</title></rect>"
                )
        parts.append(
            f'<text x="{x + bar / 2:.1f}" y="{height - 5}" font-size="10" text-anchor="middle">{escape(label)}</text>'
        )
    parts.append(f'<text x="2" y="14" font-size="10">${top:,.0f}</text>')
    svg = (
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="Monthly waterfall">'
        f"{''.join(parts)}</svg>"
    )
    return mark_safe(svg + _legend(keys))  # noqa: S308 - built from escaped labels and our own numbers


def flow(totals: dict[str, Decimal], keys=tuple(COLORS)) -> SafeString:
    """A Sankey-style flow: renters' dollars on the left, where they went on the right."""
    gross = totals.get("gross") or Decimal(0)
    if gross <= 0:
        return mark_safe('<p class="muted">No revenue settled yet.</p>')
    width, height = 720, 276
    left_x, right_x, node_w = 20, 400, 16
    parts = [
        f'<rect x="{left_x}" y="10" width="{node_w}" height="{height - 36}" fill="#111827"/>',
        f'<text x="{left_x}" y="{height - 2}" font-size="12">Renters paid ${gross:,.2f}</text>',
    ]
    y_left, y_right, usable = Decimal(10), Decimal(10), height - 36 - 4 * len(keys)
    for key in keys:
        share = totals.get(key, Decimal(0)) / gross
        h = share * usable
        if h <= 0:
            continue
        c = (left_x + node_w + right_x) / 2
        parts.append(
            f'<path d="M{left_x + node_w},{y_left:.1f} C{c},{y_left:.1f} {c},{y_right:.1f} {right_x},{y_right:.1f} '
            f"L{right_x},{y_right + h:.1f} C{c},{y_right + h:.1f} {c},{y_left + h:.1f} {left_x + node_w},"
            f'{y_left + h:.1f} Z" fill="{COLORS[key]}" opacity="0.55"/>'
        )
        parts.append(f'<rect x="{right_x}" y="{y_right:.1f}" width="{node_w}" height="{h:.1f}" fill="{COLORS[key]}"/>')
        parts.append(
            f'<text x="{right_x + node_w + 6}" y="{y_right + h / 2 + 4:.1f}" font-size="12">'
            f"{escape(LABELS[key])} ${totals[key]:,.2f} ({share:.1%})</text>"
        )
        y_left += h
        y_right += h + 4
    svg = f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="Where the revenue went">'
    return format_html("{}", mark_safe(svg + "".join(parts) + "</svg>"))  # noqa: S308


def line_chart(
    points: list[tuple[str, Decimal]],
    label: str,
    *,
    prefix: str = "$",
    places: int = 2,
    axis_places: int | None = None,
    empty: str = "Not enough appraisals for a chart yet.",
) -> SafeString:
    """A small line chart (appraisal history, share-price history): each point's value to
    ``places`` decimals, the axis to ``axis_places`` (whole units by default for dollars)."""
    if len(points) < 2:
        return format_html('<p class="muted">{}</p>', empty)
    axis_places = (0 if prefix == "$" else places) if axis_places is None else axis_places
    width, height, pad = 720, 180, 50
    values = [v for _, v in points]
    lo, hi = min(values), max(values)
    span = (hi - lo) or Decimal(1)
    step = Decimal(width - 2 * pad) / (len(points) - 1)
    coords = [(pad + i * step, height - 30 - (v - lo) / span * (height - 60)) for i, v in enumerate(values)]
    path = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(coords))
    prefix = escape(prefix)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#0f766e"><title>{escape(d)}: {prefix}{v:,.{places}f}</title>'
        "</circle>"
        for (x, y), (d, v) in zip(coords, points, strict=True)
    )
    svg = (
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{escape(label)}">'
        f'<path d="{path}" fill="none" stroke="#0f766e" stroke-width="2"/>{dots}'
        f'<text x="2" y="14" font-size="10">{prefix}{hi:,.{axis_places}f}</text>'
        f'<text x="2" y="{height - 30}" font-size="10">{prefix}{lo:,.{axis_places}f}</text>'
        f'<text x="{pad}" y="{height - 8}" font-size="10">{escape(points[0][0])}</text>'
        f'<text x="{width - pad}" y="{height - 8}" font-size="10" text-anchor="end">{escape(points[-1][0])}</text>'
        "</svg>"
    )
    return mark_safe(svg)  # noqa: S308 - built from escaped labels and our own numbers


NAV_PARTS = (("loans", "Loans", "#0f766e"), ("tbills", "T-bills", "#2563eb"), ("cash", "Cash", "#f59e0b"))


def nav_split(amounts: dict[str, Decimal]) -> SafeString:
    """One horizontal bar: the vault's NAV split into loans, T-bills and cash."""
    total = sum((max(amounts.get(key, Decimal(0)), Decimal(0)) for key, _, _ in NAV_PARTS), Decimal(0))
    if total <= 0:
        return mark_safe('<p class="muted">The vault holds nothing yet.</p>')
    width, height = 720, 28
    x, parts, legend = Decimal(0), [], []
    for key, label, color in NAV_PARTS:
        value = max(amounts.get(key, Decimal(0)), Decimal(0))
        share = value / total
        w = share * width
        if w > 0:
            parts.append(
                f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="{height}" fill="{color}">'
                f"<title>{escape(label)}: ${value:,.2f} ({share:.1%})</title></rect>"
            )
            x += w
        legend.append(
            f'<span style="display:inline-flex;align-items:center;gap:.3rem;margin-right:.8rem">'
            f'<span style="width:.8rem;height:.8rem;background:{color};display:inline-block;border-radius:2px"></span>'
            f"{escape(label)} ${value:,.2f} ({share:.1%})</span>"
        )
    svg = (
        f'<svg viewBox="0 0 {width} {height}" width="100%" height="{height}" preserveAspectRatio="none" '
        f'role="img" aria-label="NAV split">{"".join(parts)}</svg>'
    )
    return mark_safe(svg + f'<div class="small" id="nav-legend">{"".join(legend)}</div>')  # noqa: S308
