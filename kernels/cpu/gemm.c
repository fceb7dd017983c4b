/* gemm: not written yet */
