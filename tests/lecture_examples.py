"""Worked examples from the convolution lecture, as plain constants.

They are written out by hand (not computed by any implementation) so that
the same expected values can check both the reference and fastconv's kernels.
Arrays are single planes (H, W); callers add the N and C axes.
"""

import numpy as np

# A 5x5 binary image convolved with a 3x3 "X" filter, stride 1, no padding.
X5 = np.array([[1, 1, 1, 0, 0],
               [0, 1, 1, 1, 0],
               [0, 0, 1, 1, 1],
               [0, 0, 1, 1, 0],
               [0, 1, 1, 0, 0]], dtype=np.float64)
FILTER_X3 = np.array([[1, 0, 1],
                      [0, 1, 0],
                      [1, 0, 1]], dtype=np.float64)
Y_X5_X3 = np.array([[4, 3, 4],
                    [2, 4, 3],
                    [2, 3, 4]], dtype=np.float64)

# A 7x7 input with a 3x3 filter of ones: a window sum is 9 times its centre
# for the arange input (the values are linear in h and w), and counts the
# in-bounds taps for the ones input with padding 1.
X7 = np.arange(49, dtype=np.float64).reshape(7, 7)
ONES7 = np.ones((7, 7))
FILTER_ONES3 = np.ones((3, 3))
Y_X7_STRIDE1 = 9 * X7[1:-1, 1:-1]          # 5x5
Y_X7_STRIDE2 = 9 * X7[1:-1:2, 1:-1:2]      # 3x3
Y_ONES7_PAD1 = np.array([[4, 6, 6, 6, 6, 6, 4],
                         [6, 9, 9, 9, 9, 9, 6],
                         [6, 9, 9, 9, 9, 9, 6],
                         [6, 9, 9, 9, 9, 9, 6],
                         [6, 9, 9, 9, 9, 9, 6],
                         [6, 9, 9, 9, 9, 9, 6],
                         [4, 6, 6, 6, 6, 6, 4]], dtype=np.float64)

# Ten 5x5 filters over a 32x32x3 input, stride 1, padding 2: size is kept.
LAYER10_INPUT = (1, 3, 32, 32)
LAYER10_WEIGHT = (10, 3, 5, 5)
LAYER10_OUTPUT = (1, 10, 32, 32)
LAYER10_PARAMS = 760                       # 10 * (5*5*3 + 1)

# Six 5x5x3 filters over a 32x32x3 image, no padding: six 28x28 maps.
LAYER6_INPUT = (1, 3, 32, 32)
LAYER6_WEIGHT = (6, 3, 5, 5)
LAYER6_OUTPUT = (1, 6, 28, 28)

# 2x2 max pooling, stride 2; indices are flat h*W + w within the plane.
POOL_X = np.array([[1, 1, 2, 4],
                   [5, 6, 7, 8],
                   [3, 2, 1, 0],
                   [1, 2, 3, 4]], dtype=np.float64)
POOL_Y = np.array([[6, 8],
                   [3, 4]], dtype=np.float64)
POOL_INDICES = np.array([[5, 7],
                         [8, 15]], dtype=np.int64)
