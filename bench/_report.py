"""Markdown tables of the server benchmark's results (bench/server.py)."""

from __future__ import annotations

import typing

__all__ = ['LOSS_LIMIT', 'best', 'report']

#: A step passes with a loss below this share of the lines sent.
LOSS_LIMIT = 0.01

Row = dict[str, typing.Any]


def best(rows: list[Row], kind: str, lines: int) -> int | None:
    """The highest valid rate at which `kind` lost less than the limit."""
    good = [r['rate'] for r in rows if r['daemon'] == kind and r['lines'] == lines
            and r['valid'] and r['loss'] < LOSS_LIMIT]
    return max(good) if good else None


def _steps(rows: list[Row], kinds: list[str]) -> list[str]:
    out = ['| lines/datagram | target lines/s | ' + ' | '.join(
        f'{k}: loss (load avg)' for k in kinds) + ' | generator lines/s (' + ' / '.join(kinds)
        + ') |', '|---:|---:|' + '---:|' * len(kinds) + '---:|']
    for lines in sorted({r['lines'] for r in rows}):
        for rate in sorted({r['rate'] for r in rows if r['lines'] == lines}):
            cells = []
            generated = []
            for kind in kinds:
                row = next((r for r in rows if r['daemon'] == kind and r['lines'] == lines
                            and r['rate'] == rate), None)
                if row is None:
                    cells.append('-')
                    continue
                mark = '' if row['loss'] < LOSS_LIMIT else ' ✗'
                bad = f", {row['bad_lines']:,.0f} bad lines" if row['bad_lines'] else ''
                cells.append(f"{row['loss']:.2%}{mark}{bad} ({row['loadavg'].split()[0]})")
                generated.append(f"{row['generator_rate']:,.0f}"
                                 + ('' if row['valid'] else ' short'))
            out.append(f'| {lines} | {rate:,} | ' + ' | '.join(cells)
                       + f" | {' / '.join(generated)} |")
    return out


def _summary(rows: list[Row], kinds: list[str]) -> list[str]:
    pair = 'ours' in kinds and 'etsy' in kinds
    out = ['| lines/datagram | ' + ' | '.join(f'{k}: highest rate < 1% loss' for k in kinds)
           + (' | ours/etsy |' if pair else ' |'),
           '|---:|' + '---:|' * (len(kinds) + pair)]
    for lines in sorted({r['lines'] for r in rows}):
        found = {k: best(rows, k, lines) for k in kinds}
        cells = [f'{found[k]:,}' if found[k] else 'none' for k in kinds]
        if pair:
            ours, etsy = found['ours'], found['etsy']
            cells.append(f'{ours / etsy:.2f}x' if ours and etsy else '-')
        out.append(f'| {lines} | ' + ' | '.join(cells) + ' |')
    return out


_UNIQUE_ROWS = [
    ('names flushed (numStats)', 'num_stats', ',.0f'),
    ('lines in the flush', 'flush_lines', ','),
    ('bytes in the flush', 'flush_bytes', ','),
    ('processing_time, ms (timer statistics)', 'processing_time_ms', ',.0f'),
    ('graphiteStats.calculationtime, ms (rendering)', 'calculationtime_ms', ',.0f'),
    ('graphiteStats.flush_time, ms (sending)', 'flush_time_ms', ',.0f'),
    ('first to last byte at the receiver, s', 'flush_arrival_s', '.2f'),
    ('... the next flush, under load, s', 'flush_arrival_under_load_s', '.2f'),
    ('RSS before the names, MiB', 'rss_idle_kib', 'MiB'),
    ('RSS after the first flush, MiB', 'rss_after_flush_kib', 'MiB'),
    ('peak RSS (VmHWM), MiB', 'rss_peak_kib', 'MiB'),
    ('loss at 100k lines/s (1 line/datagram) across a flush', 'load_loss', '.2%'),
    ('kernel drops in that step (datagrams)', 'load_kernel_drops', ','),
    ('generator lines/s in that step', 'load_generator_rate', ',.0f'),
    ('load average in that step', 'loadavg', ''),
]


def _unique(unique: list[Row]) -> list[str]:
    out = ['| 100k names, flush every 5 s | ' + ' | '.join(u['daemon'] for u in unique) + ' |',
           '|---|' + '---:|' * len(unique)]
    for label, key, fmt in _UNIQUE_ROWS:
        values = []
        for u in unique:
            value = u.get(key)
            if value is None:
                values.append('-')
            elif fmt == 'MiB':
                values.append(f'{value / 1024:,.0f}')
            else:
                values.append(format(value, fmt))
        out.append(f'| {label} | ' + ' | '.join(values) + ' |')
    return out


def report(info: dict[str, str], command: str, rows: list[Row], unique: list[Row],
           calibration: dict[int, float]) -> str:
    """The results as Markdown: machine, steps, summary, 100k names."""
    out = [f"Run {info['date']}: `{command}`", '',
           f"Machine: {info['nproc']} CPUs, kernel {info['kernel']}, Python {info['python']}, "
           f"Node {info['node']}, net.core.rmem_default={info['rmem_default']}, "
           f"rmem_max={info['rmem_max']}, load average at the start {info['loadavg']}, "
           f"at the end {info.get('loadavg_end', '?')}.", '',
           '```', info['lscpu'], '```', '',
           'Generator ceiling (unpaced, into a socket nobody reads): ' + ', '.join(
               f'{rate:,.0f} datagrams/s at {lines} line(s)/datagram'
               for lines, rate in calibration.items()) + '.', '']
    kinds = list(dict.fromkeys(r['daemon'] for r in rows))
    if rows:
        out += [*_steps(rows, kinds), '', *_summary(rows, kinds)]
    if unique:
        out += ['', *_unique(unique)]
    return '\n'.join(out)
