/* norm: not written yet */
