"""Executes a notebook with nbclient in the Python that runs this script (its own kernel).

  python run_notebook.py NOTEBOOK OUT.ipynb WORKING_DIR

`tests/test_notebook.py` runs it with a fresh virtual environment's Python that holds only
nbclient and ipykernel, so the notebook's first cell has to install the project itself. The
executed notebook is written to OUT.ipynb even when a cell fails (the error is in it).
"""

import sys

import nbclient
import nbformat


def main(notebook: str, out: str, cwd: str) -> int:
  nb = nbformat.read(notebook, as_version=4)
  client = nbclient.NotebookClient(nb, timeout=900, kernel_name='python3',
                                   resources={'metadata': {'path': cwd}})
  try:
    client.execute()
    return 0
  except nbclient.exceptions.CellExecutionError as e:
    print(f'{notebook}: a cell failed: {str(e)[-2000:]}', file=sys.stderr)
    return 1
  finally:
    nbformat.write(nb, out)


if __name__ == '__main__':
  sys.exit(main(*sys.argv[1:4]))
