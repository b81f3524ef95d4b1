"""Evaluation reports: the paper's numbers only where the protocol is the same."""

import numpy as np

from prnet_jax.evaluation import reports


def report_for(norm: str, dense: bool = True):
  rng = np.random.RandomState(0)
  errors = {m: rng.uniform(0.01, 0.08, 30) for m in
            (reports.ALIGNMENT_METRICS if dense else ('nme_2d', 'nme_3d'))}
  summary = reports.summarize(errors, rng.randint(0, 3, 30), 0.07)
  info = {'checkpoint': 'c', 'step': 1, 'count': 30,
          'options': {'norm': norm, 'dense_norm': 'box', 'z_align': 'mean',
                      'auc_threshold': 0.07}}
  return reports.markdown_table('aflw2000_3d', summary, info)


def row(table: str, start: str) -> list[str]:
  line = next(l for l in table.splitlines() if l.startswith(start))
  return [c.strip() for c in line.strip('|').split('|')]


def test_paper_numbers_are_marked_where_the_protocol_differs():
  table = report_for('box')
  # 2D with the landmark-box normaliser: the paper's protocol, its numbers unmarked.
  assert row(table, '| abs(yaw) [0, 30]')[-1] == '2.75'
  assert row(table, '| mean of the bucket means')[-1] == '3.62'
  # 3D and dense: normalisers not published, marked.
  assert row(table, '| 68 landmarks')[-2:] == ['3.26', '4.70*']
  assert row(table, '| dense (face pixels)')[-2:] == ['3.17*', '4.40*']
  assert 'not comparable: the paper does not publish its 3D and dense normalisers' in table
  # Another 2D normaliser: the 2D numbers are marked too.
  table = report_for('diag', dense=False)
  assert row(table, '| abs(yaw) [0, 30]')[-1] == '2.75*'
  assert row(table, '| 68 landmarks')[-2:] == ['3.26*', '4.70*']
  assert 'another 2D normaliser' in table and '| dense' not in table
