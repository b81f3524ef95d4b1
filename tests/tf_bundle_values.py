"""The variables of tests/data/tf_bundle/small.* (written once by TensorFlow's SaveV2 from
these values; `tests/test_tf_checkpoint.py` reads them back without TensorFlow)."""

import numpy as np

_rng = np.random.RandomState(7)
VALUES = {
    'scope/Conv/weights': _rng.randn(3, 3, 2, 4).astype(np.float32),
    'scope/Conv/BatchNorm/moving_mean': _rng.randn(4).astype(np.float32),
    'scope/half': _rng.randn(5, 3).astype(np.float16),
    'scope/double': _rng.randn(2, 2, 2).astype(np.float64),
    'global_step': np.int64(123456789012),
    'counts': np.arange(-3, 4, dtype=np.int32),
    'bytes': np.arange(250, 256, dtype=np.uint8),
    'flags': np.array([True, False, True]),
    'empty': np.zeros((0, 3), np.float32),
    'scalar': np.float32(0.5),
}
