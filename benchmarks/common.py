"""Small helpers shared by the benchmark scripts: machine description, timing, table + JSON."""

import json
import os
import platform
import statistics
import time
from typing import Callable, Sequence

import jax


def machine() -> dict:
  return {'platform': platform.platform(), 'python': platform.python_version(),
          'cpu_count': os.cpu_count(), 'jax': jax.__version__,
          'devices': [str(d) for d in jax.devices()]}


def time_calls(fn: Callable[[], object], repeats: int) -> list[float]:
  """Wall seconds of `repeats` calls of fn (fn must block until its result is ready)."""
  out = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    out.append(time.perf_counter() - t)
  return out


def median(xs: Sequence[float]) -> float:
  return statistics.median(xs)


def report(name: str, rows: list[dict], columns: Sequence[str], output: str | None) -> None:
  """Prints `rows` as a table and writes {'benchmark', 'machine', 'rows'} as JSON to `output`."""
  widths = [max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in columns]
  print('  '.join(c.ljust(w) for c, w in zip(columns, widths)))
  for r in rows:
    print('  '.join(_fmt(r[c]).ljust(w) for c, w in zip(columns, widths)))
  if output:
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, 'w') as f:
      json.dump({'benchmark': name, 'machine': machine(), 'rows': rows}, f, indent=2)
    print(f'wrote {output}')


def _fmt(v) -> str:
  return f'{v:.4g}' if isinstance(v, float) else str(v)
