"""Markdown tables of the server benchmark's results (bench/server.py)."""

from __future__ import annotations

import typing

__all__ = ['LOSS_LIMIT', 'best', 'capacity', 'report']

#: A step passes with a loss below this share of the lines sent.
LOSS_LIMIT = 0.01

Row = dict[str, typing.Any]


def best(rows: list[Row], kind: str, lines: int) -> int | None:
    """The highest valid rate at which `kind` lost less than the limit."""
    good = [r['rate'] for r in rows if r['daemon'] == kind and r['lines'] == lines
            and r['valid'] and r['loss'] < LOSS_LIMIT]
    return max(good) if good else None


def _steps(rows: list[Row]) -> list[str]:
    out = ['| lines/datagram | target lines/s | daemon | loss | kernel drops (lines) '
           '| daemon CPU busy | daemon CPU µs/line | others + steal, cores | attempts '
           '| load avg | generator lines/s |',
           '|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    for row in sorted(rows, key=lambda r: (r['lines'], r['rate'])):
        mark = '' if row['loss'] < LOSS_LIMIT else ' ✗'
        bad = f", {row['bad_lines']:,.0f} bad lines" if row['bad_lines'] else ''
        short = '' if row['valid'] else ' (short)'
        out.append(
            f"| {row['lines']} | {row['rate']:,} | {row['daemon']} | {row['loss']:.2%}{mark}{bad} "
            f"| {row['kernel_drops']:,} | {row['daemon_busy']:.0%} "
            f"| {row['cpu_us_per_line']:.2f} "
            f"| {row['foreign_cores']:.2f} + {row.get('steal_cores', 0):.2f} "
            f"| {row.get('attempts', 1)} "
            f"| {row['loadavg'].split()[0]} | {row['generator_rate']:,.0f}{short} |")
    return out


def capacity(rows: list[Row], kind: str, lines: int) -> float | None:
    """Lines/s one whole core would take: 1 / CPU per line at the best step.

    The highest lossless step amortises the idle costs (flushes, wake-ups)
    best, so its CPU per line is the closest to the marginal cost.
    """
    top = best(rows, kind, lines)
    costs = [r['cpu_us_per_line'] for r in rows if r['daemon'] == kind
             and r['lines'] == lines and r['rate'] == top]
    return 1e6 / costs[0] if costs else None


def _summary(rows: list[Row], kinds: list[str]) -> list[str]:
    pair = 'ours' in kinds and 'etsy' in kinds
    out = ['| lines/datagram | ' + ' | '.join(f'{k}: highest rate < 1% loss' for k in kinds)
           + (' | ours/etsy |' if pair else ' |')
           + ' | '.join(f' {k}: lines/s per core (CPU)' for k in kinds)
           + (' | ours/etsy |' if pair else ' |'),
           '|---:|' + '---:|' * (2 * (len(kinds) + pair))]
    for lines in sorted({r['lines'] for r in rows}):
        found = {k: best(rows, k, lines) for k in kinds}
        cells = [f'{found[k]:,}' if found[k] else 'none' for k in kinds]
        if pair:
            ours, etsy = found['ours'], found['etsy']
            cells.append(f'{ours / etsy:.2f}x' if ours and etsy else '-')
        cores = {k: capacity(rows, k, lines) for k in kinds}
        cells += [f'{cores[k]:,.0f}' if cores[k] else '-' for k in kinds]
        if pair:
            ours_c, etsy_c = cores['ours'], cores['etsy']
            cells.append(f'{ours_c / etsy_c:.2f}x' if ours_c and etsy_c else '-')
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
    ('steady load across the next flush, lines/s (1 line/datagram)', 'load_rate', ','),
    ('loss under that load', 'load_loss', '.2%'),
    ('kernel drops in that step (datagrams)', 'load_kernel_drops', ','),
    ('daemon CPU busy in that step', 'load_daemon_busy', '.0%'),
    ('other processes in that step, cores', 'load_foreign_cores', '.2f'),
    ('hypervisor steal in that step, cores', 'load_steal_cores', '.2f'),
    ('generator lines/s in that step', 'load_generator_rate', ',.0f'),
    ('load average in that step', 'loadavg', ''),
]


def _unique(unique: list[Row]) -> list[str]:
    out = ['| 100k names, flush every 5 s | ' + ' | '.join(u['label'] for u in unique) + ' |',
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
        out += [*_steps(rows), '', *_summary(rows, kinds)]
    if unique:
        out += ['', *_unique(unique)]
    return '\n'.join(out)
